"""The commit, diff and storage views: what `ckstore show`, `diff` and `du` know, gathered for one page each."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import CkstoreError, UsageError
from ..model import stats
from ..model.diff import tensors_by_name
from ..model.refnames import ALIASES, TAGS
from ..results import json_safe
from . import heat

if TYPE_CHECKING:
    from ..api import Repo


def commit_page(repo: Repo, rev: str, du_rows: dict[str, Any] | None = None) -> dict[str, Any]:
    """A commit with its files and tensors (with statistics), storage, probe and verification verdicts, notes,
    and the audit entries that moved a ref to or from it. Storage: logical, the frames of its own chunks, new
    against its parents, and from `du` by commit (`du_rows`: id -> row, computed once by the caller for every
    commit, since what only this commit keeps depends on all the others) stored-with-bases and unique."""
    info = repo.show(rev)
    data = info.to_dict()
    oid = data["id"]
    row = (du_rows if du_rows is not None else {r.name: r for r in repo.du(by="commit").rows}).get(oid)
    data["storage"] = {"logical": info.logical_bytes, "frames": info.stored_bytes, "new": info.new_bytes,
                       "stored": row.stored if row else None, "unique": row.unique if row else None}
    data["probe"] = repo.probe(oid)
    data["verdict"] = data.get("notes", {}).get("verify", {}).get("verdict")
    data["audit"] = [e.to_dict() for e in repo.audit() if _names(repo, e.ref, (e.old, e.new), oid)]
    data["env"] = data["meta"].get("env", {})
    return json_safe(data)


def _names(repo: Repo, ref: str, values: tuple[str | None, ...], oid: str) -> bool:
    """Whether an audit entry's old or new value is commit `oid`: directly, or (only tags and aliases name
    objects that point at a commit) once peeled. Branch and note values are never peeled: a page of a
    10,000-commit history would otherwise resolve 10,000 values."""
    if oid in values:
        return True
    if not ref.startswith((TAGS, ALIASES)):
        return False
    for value in values:
        if value:
            try:
                if repo.resolve(value) == oid:
                    return True
            except CkstoreError:  # a deleted tag's object may be gone
                pass
    return False


def diff_page(repo: Repo, a: str, b: str | None = None) -> dict[str, Any]:
    """The diff of two commits (files, tensors, metric and param deltas) with its per-layer change map."""
    d = repo.diff(a, b).to_dict()
    d["heat"] = heat.heat(d)
    return json_safe(d)


def storage_page(repo: Repo, by: str = "commit") -> dict[str, Any]:
    """`du` by commit, branch, tag or remote: per item its unique and shared bytes, and the totals on disk."""
    return json_safe(repo.du(by=by).to_dict())


def histogram(repo: Repo, rev: str, tensor: str) -> dict[str, Any]:
    """The value histogram of one tensor of `rev` (as diff names it: "name" or "file:name"): the stored one, or,
    for commits made before histograms were stored, one computed from the tensor's data now. `counts` are the raw
    bin counts over `hist_of` elements (a systematic sample of large tensors; `count` when over every element)."""
    oid = repo.resolve(rev)
    entry = tensors_by_name(repo.manifest(oid)).get(tensor)
    found = repo.tensor_stats(oid, tensor)
    if entry is None or found is None:
        raise UsageError(f"{rev} has no tensor {tensor!r}")
    stored, computed = found
    hist = stats.histogram(stored) or (stats.hist_edges(), [], 0)  # a tensor without statistics: no bins
    edges, counts, hist_of = hist
    return json_safe({"rev": oid, "tensor": tensor, "dtype": entry.dtype, "shape": list(entry.shape),
                      "edges": edges, "counts": counts, "hist_of": hist_of, "zeros": stored.get("zeros"),
                      "nan": stored.get("nan"), "inf": stored.get("inf"), "count": stored.get("count"),
                      "computed": computed})


