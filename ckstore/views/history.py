"""The history view: every commit reachable from a ref, newest first, with its refs by kind, key metrics, notes,
verification verdict, the branch that colours it, and the lane layout to draw the graph."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import lanes

if TYPE_CHECKING:
    from ..api import Repo
    from ..results import CommitInfo


def ref_kinds(repo: Repo) -> dict[str, dict[str, str]]:
    """{"branches"|"tags"|"aliases": {name: commit id}} and "head": the checked-out branch."""
    return {"branches": {b.name: b.id for b in repo.branches()},
            "tags": {t.name: t.id for t in repo.tags()},
            "aliases": {a.name: a.id for a in repo.aliases()},
            "head": {"branch": repo.head_branch()}}


def verdict(info: CommitInfo) -> bool | None:
    """The last `ckstore verify` verdict noted on the commit: True (pass), False (fail) or None (never run)."""
    v = info.notes.get("verify", {}).get("verdict")
    return bool(v.get("passed")) if isinstance(v, dict) else None


def names_by_commit(kinds: dict[str, dict[str, str]]) -> dict[str, dict[str, list[str]]]:
    """{commit id: {"branches"|"tags"|"aliases": [names]}} from `ref_kinds`."""
    out: dict[str, dict[str, list[str]]] = {}
    for kind in ("branches", "tags", "aliases"):
        for name, oid in sorted(kinds[kind].items()):
            out.setdefault(oid, {"branches": [], "tags": [], "aliases": []})[kind].append(name)
    return out


_NONE: dict[str, list[str]] = {"branches": [], "tags": [], "aliases": []}


def row(info: CommitInfo, named: dict[str, list[str]], branch: str | None) -> dict[str, Any]:
    """One commit as the history page lists it (`named`: its refs by kind)."""
    c = info.commit
    return {"id": info.id, "parents": info.parents, "message": c.message.split("\n", 1)[0], "author": c.author,
            "time": c.time, "step": c.step, "metrics": c.metrics, **named, "notes": sorted(info.notes),
            "verified": verdict(info), "branch": branch}


def history(repo: Repo, where: str | None = None, *, rev: str | None = None) -> dict[str, Any]:
    """Every commit (newest first; with `rev`, only those `rev` reaches) with its lane layout; `where` (the `find`
    query language) keeps only matching commits, each then drawn with its nearest kept ancestors as parents."""
    kinds = ref_kinds(repo)
    infos = repo.log(rev) if rev is not None else repo.log(all=True)
    owner = _owners(infos, kinds)
    kept = infos if where is None else repo.log(rev, all=rev is None, where=where)
    parents = _nearest_kept(infos, {i.id for i in kept}) if where is not None else None
    named = names_by_commit(kinds)
    rows = []
    for info in kept:
        r = row(info, named.get(info.id, _NONE), owner.get(info.id))
        if parents is not None:
            r["parents"] = parents[info.id]
        rows.append(r)
    layout = lanes.layout((r["id"], r["parents"]) for r in rows)
    spans = []
    for i, (r, lay) in enumerate(zip(rows, layout)):
        r.update(lay)
        r["parent_branches"] = [owner.get(p) for p in r["parents"]]  # a lane takes its parent's colour
        for k, (_, col, end) in enumerate(lay["edges"]):
            if end is not None and end > i + 1:  # a lane running straight down from row i+1 to its parent
                spans.append([i + 1, end, col, r["branch"] if k == 0 else r["parent_branches"][k]])
    return {"commits": rows, "total": len(rows), "all": len(infos), "width": lanes.width(layout), "refs": kinds,
            "spans": spans}


def _owners(infos: list[CommitInfo], kinds: dict[str, dict[str, str]]) -> dict[str, str]:
    """The branch whose first-parent chain holds each commit (HEAD's branch first, then by name)."""
    first = {i.id: (i.parents[0] if i.parents else None) for i in infos}
    head = kinds["head"]["branch"]
    order = sorted(kinds["branches"], key=lambda b: (b != head, b))
    owner: dict[str, str] = {}
    for name in order:
        oid: str | None = kinds["branches"][name]
        while oid is not None and oid not in owner and oid in first:
            owner[oid] = name
            oid = first[oid]
    return owner


def _nearest_kept(infos: list[CommitInfo], kept: set[str]) -> dict[str, list[str]]:
    """For every commit, its nearest ancestors in `kept` (through the ones left out), oldest commits first so
    each answer builds on its parents' answers."""
    parents = {i.id: i.parents for i in infos}
    near: dict[str, list[str]] = {}
    for info in reversed(infos):  # walk order is newest first: parents come before their children here
        out: list[str] = []
        for p in parents[info.id]:
            for q in ([p] if p in kept else near.get(p, [])):
                if q not in out:
                    out.append(q)
        near[info.id] = out
    return near
