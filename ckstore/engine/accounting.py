"""Storage accounting: what each commit, branch or tag costs, what dropping it frees, and where the bytes on disk go.

A chunk is needed by a commit when its manifest names it or when it lies on the delta chain of one it names. The
bytes "unique" to an item are those of the frames and objects only it needs. One dependency is counted honestly:
a chunk only this item names, that another item's delta frame is based on, is freed only if repack re-encodes the
dependant; it counts as unique by its own length minus what the dependant's full frame would cost more (never
below zero: then keeping it is cheaper, and repack keeps it too).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..errors import UsageError
from ..model import graph
from ..model.refnames import HEADS, REMOTES, TAGS, short
from ..results import DuReport, DuRow
from ..storage.remotes import min_replicas
from ..storage.config import MAX_DELTA_DEPTH
from ..storage.packs import ENTRY, pack_path
from .gc import pack_entries
from .reach import Reach, mark, roots
from .repository import Repository

GIB = 1 << 30


def plain_length(repo: Repository, chunk: bytes) -> int:
    """What a full frame of `chunk` is expected to cost: the stored length of the full frame its delta chain
    starts from (an older version of the same data), or its raw length when the chain cannot be followed."""
    _, plain = repo.store.delta_chain(chunk, 64)
    if plain is not None:
        return plain
    loc = repo.store.index.get(chunk)
    return loc.raw_length if loc is not None else 0


def reencode_cost(repo: Repository, dependants: Iterable[bytes]) -> int:
    """Extra bytes of storing these delta-framed chunks whole: the full frame their chain starts from (the stored
    size of a plain frame of the same data) minus their own delta frame."""
    extra = 0
    locs = repo.store.index.get_many(list(dependants))
    for chunk, loc in locs.items():
        extra += max(0, plain_length(repo, chunk) - loc.length)
    return extra


@dataclass
class BaseRule:
    """What becomes of the bases no kept manifest names (`Reach.bases`) once repack has run."""

    keep: set[bytes] = field(default_factory=set)        # bases that stay, each with the bases below it
    reencode: dict[bytes, int] = field(default_factory=dict)  # kept chunks stored whole instead -> expected length


def base_rule(repo: Repository, reach: Reach, among: set[bytes] | None = None) -> BaseRule:
    """The one rule repack follows and `stored_bytes` assumes. For each base only kept as a base: keep it, with
    the bases-only chunks below it on its chain (a delta base cannot stay without its own base), when that costs
    no more than re-encoding whole the kept chunks whose frames name it; otherwise those are re-encoded and the
    chain goes. `among`: only these kept chunks' frames may change (repack's inversion plans the others)."""
    locs = repo.store.index.get_many(list(reach.live_chunks))
    length: Callable[[bytes], int] = lambda c: locs[c].length if c in locs else 0  # noqa: E731
    deps: dict[bytes, list[bytes]] = defaultdict(list)
    for chunk, base in reach.base_of.items():
        if chunk in reach.chunks and base in reach.bases and (among is None or chunk in among):
            deps[base].append(chunk)
    rule = BaseRule()
    for entry in sorted(deps):  # sorted: the same mark gives the same decisions, in forget and in gc
        chain, cur = [], entry
        while cur is not None and cur in reach.bases and cur not in rule.keep and len(chain) <= MAX_DELTA_DEPTH:
            chain.append(cur)
            cur = reach.base_of.get(cur)
        plains = {d: plain_length(repo, d) for d in deps[entry]}
        extra = sum(max(0, p - length(d)) for d, p in plains.items())
        if sum(length(c) for c in chain) <= extra:
            rule.keep.update(chain)
        else:
            rule.reencode.update(plains)
    return rule


def stored_bytes(repo: Repository, reach: Reach) -> int:
    """Bytes a mark keeps once gc and repack are done: live frames and objects, with each base no manifest names
    either kept or replaced by re-encoding its dependants, as `base_rule` decides."""
    rule = base_rule(repo, reach)
    locs = repo.store.index.get_many(list(reach.live_chunks))
    kept = [c for c in locs if c in reach.chunks] + [b for b in rule.keep if b in locs]
    total = sum(rule.reencode.get(c, locs[c].length) for c in kept)
    total += len(kept) * 2 * ENTRY.size  # each frame's entry in its pack's trailer and in the .idx
    return total + _object_bytes(repo, reach.objects)


def _object_bytes(repo: Repository, oids: Iterable[bytes]) -> int:
    total = 0
    for oid in oids:
        try:
            total += os.stat(repo.store.object_path(oid)).st_size
        except FileNotFoundError:
            continue
    return total


def units(repo: Repository, by: str, reach: Reach, revs: list[bytes] | None = None) -> dict[str, tuple[str, set[bytes]]]:
    """The items of a `du --by`: name -> (kind, the kept commits it keeps)."""
    if by == "commit":
        chosen = revs if revs else sorted(reach.commits, key=lambda c: -repo.time_of(c))
        return {c.hex(): ("commit", {c}) for c in chosen}
    if by == "remote":
        return {name: ("remote", commits) for name, commits in on_remotes(repo, reach).items()}
    prefix = {"branch": (HEADS, REMOTES), "tag": (TAGS,)}.get(by)
    if prefix is None:
        raise UsageError(f"du --by is commit, branch, tag or remote, not {by!r}")
    out = {}
    for name, oid in repo.refs.list().items():
        if name.startswith(prefix):
            tip = repo.peel(oid)
            out[short(name)] = (by, graph.ancestors(tip, repo.parents) & reach.commits)
    return out


def on_remotes(repo: Repository, reach: Reach) -> dict[str, set[bytes]]:
    """Remote name -> the kept commits its remote-tracking refs reach (what it held at the last push or fetch)."""
    out: dict[str, set[bytes]] = {}
    for name, oid in repo.refs.list(REMOTES).items():
        remote = name.removeprefix(REMOTES).split("/", 1)[0]
        out.setdefault(remote, set()).update(graph.ancestors(repo.peel(oid), repo.parents) & reach.commits)
    return out


def du(repo: Repository, by: str = "commit", revs: list[bytes] | None = None,
       prices: dict[str, float] | None = None) -> DuReport:
    """Per item: logical, stored, unique and shared bytes; and the repository's totals, equal to the bytes of
    packs/ and objects/ on disk."""
    reach = mark(repo, roots(repo, grace=0.0))
    items = units(repo, by, reach, revs)
    needs = _needs(repo, reach)
    locs = repo.store.index.get_many(list(reach.live_chunks))
    length: Callable[[bytes], int] = lambda c: locs[c].length if c in locs else 0  # noqa: E731
    owners: dict[bytes, set[str]] = defaultdict(set)  # chunk or object -> the items needing it
    for name, (_, commits) in items.items():
        for c in commits:
            for x in needs[c]:
                owners[x].add(name)
    obj_size = {o: s for o, s in _object_sizes(repo, reach.objects).items()}
    direct_users: dict[bytes, set[str]] = defaultdict(set)  # chunk -> items whose manifests name it
    for name, (_, commits) in items.items():
        for c in commits:
            for x in _direct(repo, c):
                direct_users[x].add(name)
    dependants: dict[bytes, list[bytes]] = defaultdict(list)
    for d, b in reach.base_of.items():
        dependants[b].append(d)
    held = on_remotes(repo, reach)
    rows = []
    for name, (kind, commits) in items.items():
        row = DuRow(name, kind, commits=len(commits))
        if held and kind != "remote":  # on how many remotes every commit of the item is
            row.extra["replicas"] = min((sum(c in h for h in held.values()) for c in commits), default=0)
        mine: set[bytes] = set()
        for c in commits:
            mine |= needs[c]
            row.logical += repo.manifest_of(c).logical_bytes()
        for x in mine:
            size = obj_size.get(x, length(x))
            row.stored += size
            if owners[x] == {name}:
                row.unique += size
            elif direct_users.get(x) == {name}:  # others need it only as a delta base
                deps = [d for d in dependants[x] if direct_users.get(d, set()) - {name}]
                row.unique += max(0, size - reencode_cost(repo, deps))
        row.shared = row.stored - row.unique
        if prices and "local" in prices:
            row.extra["monthly_cost"] = round(row.unique / GIB * prices["local"], 6)
        rows.append(row)
    disk = disk_usage(repo, reach)
    least = min_replicas(repo.dir)
    if least and held:  # commits held by fewer remotes than the configured minimum, by name
        short_of = sorted(c.hex()[:12] for c in reach.commits if sum(c in h for h in held.values()) < least)
        if short_of:
            disk["warnings"] = [f"{len(short_of)} commits are on fewer than {least} remotes (min_replicas): "
                                + ", ".join(short_of[:8]) + ("…" if len(short_of) > 8 else "")]
        disk["min_replicas"] = least
    return DuReport(by, rows, disk)


def _direct(repo: Repository, commit: bytes) -> set[bytes]:
    return repo.manifest_of(commit).chunk_ids()


def _needs(repo: Repository, reach: Reach) -> dict[bytes, set[bytes]]:
    """Commit -> every chunk (with delta bases) and object it needs."""
    out = {}
    for c in reach.commits:
        chunks = set(_direct(repo, c))
        for x in list(chunks):
            while x in reach.base_of:
                x = reach.base_of[x]
                chunks.add(x)
        out[c] = chunks | {c, repo.commit(c).manifest}
    return out


def _object_sizes(repo: Repository, oids: Iterable[bytes]) -> dict[bytes, int]:
    out = {}
    for oid in oids:
        try:
            out[oid] = os.stat(repo.store.object_path(oid)).st_size
        except FileNotFoundError:
            continue
    return out


def disk_usage(repo: Repository, reach: Reach) -> dict:
    """Where the bytes of packs/ and objects/ go: live and dead frames, pack overhead, live and dead objects; and
    what tombstones hold (not part of the total: gc deletes them after their grace period)."""
    live = reach.live_chunks
    frames_live = frames_dead = pack_bytes = 0
    counted: set[bytes] = set()
    for pack_id, entries in pack_entries(repo).items():
        for suffix in (".pack", ".idx"):
            pack_bytes += os.stat(pack_path(repo.store.packs_dir, pack_id, suffix)).st_size
        for e in entries:
            if e.chunk in live and e.chunk not in counted:
                frames_live += e.length
                counted.add(e.chunk)
            else:
                frames_dead += e.length
    for pack_id in repo.store.packs_without_idx():  # unindexed: garbage
        pack_bytes += os.stat(pack_path(repo.store.packs_dir, pack_id)).st_size
    sizes = _object_sizes(repo, repo.store.object_ids())
    objects_live = sum(s for o, s in sizes.items() if o in reach.objects)
    objects = sum(sizes.values())
    stones = repo.store.tombstones
    return {"packs": pack_bytes, "objects": objects, "total": pack_bytes + objects,
            "frames_live": frames_live, "frames_dead": frames_dead,
            "pack_overhead": pack_bytes - frames_live - frames_dead,
            "objects_live": objects_live, "objects_dead": objects - objects_live,
            "referenced": frames_live + objects_live,
            "reclaimable": frames_dead + objects - objects_live,
            "tombstones": sum(stones.size(n) for n, _ in stones.sets())}
