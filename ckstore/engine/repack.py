"""Repack: rewrite packs so that what gc drops really frees its bytes, and (with `invert`) turn delta chains around.

Runs inside gc's sweep (no writer runs meanwhile), in four steps:
  1. Plan the frame of every chunk the mark keeps (`want`: the chunk its frame will be a delta against, or None
     for a full frame). A kept chunk whose base is kept only as a base is re-encoded whole, or the base stays,
     by the one rule `accounting.base_rule` (what `forget --dry-run` and `du` assume). With `invert`, along the
     first-parent history of each ref's tip, the tip's chunks become full frames and each older version of a
     tensor chunk (same file, tensor name and chunk index) a delta against the next newer one, at most
     `max_delta_depth` deep: the newest checkout, the one users run most, decodes one frame per chunk.
  2. Choose the packs to rewrite: those holding a chunk whose frame changes (no second, stale frame of a chunk is
     left behind for an index rebuild to pick), those whose unused bytes exceed `max_unused`, small packs when
     there are several, and those holding a frame whose base will be gone.
  3. Verify every frame to be copied out of them (decoded and hashed to its id). A pack with a frame that fails
     is pinned (left as it is, its frames keep their bases) and the plan is made again without it.
  4. Write the frames into new packs, bases before the frames on them, each decoded and hashed once more as
     written. gc's sweep then moves the old packs to tombstones, newest first: what a crash leaves of them only
     holds frames whose old bases are still there, so any mix of old and new frames decodes.
The frame format is unchanged: an inverted delta is an ordinary XOR frame. When the newer version's old frame was
the XOR against this one, the new frame reuses that very payload under a header naming the other base (XOR is
symmetric), so inverting a chain costs no encoding and keeps its stored bytes but for the one full frame.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..errors import CkstoreError, CorruptObject, UsageError
from ..model import codec
from ..model.progress import NoProgress, Progress
from ..model.refnames import HEADS, REMOTES, TAGS
from ..results import GcResult
from ..storage.index import Location
from ..storage.packs import Entry, pack_path
from .accounting import base_rule
from .gc import DEFAULT_GRACE, Repacker, gc, pack_entries
from .reach import Reach
from .repository import Repository

SMALL = 4  # a pack under pack_size / SMALL is small; two or more small packs are merged
ROOT, FAILED = object(), object()  # walk markers: "the base is outside the walk", "the base did not verify"


def repacker_for(max_unused: float, *, invert: bool = False, progress: Progress | None = None) -> Repacker:
    """A repack step for gc: rewrites packs whose garbage exceeds `max_unused` (a fraction of the pack), merges
    small packs, re-encodes what dropped bases would otherwise keep, and with `invert` turns chains around."""
    if not 0 <= max_unused <= 1:
        raise UsageError(f"--max-unused is a fraction from 0 to 1, not {max_unused}")

    def run(repo: Repository, reach: Reach, candidates: list[dict], result: GcResult) -> list[bytes]:
        return repack(repo, reach, result, max_unused=max_unused, invert=invert, progress=progress)
    return run


def repack_now(repo: Repository, *, max_unused: float = 0.10, invert: bool = True,
               progress: Progress | None = None) -> GcResult:
    """Repack on its own: one gc run (gc's lock, its mark, the sweep lock and its sweep) with this repack inside
    it; the packs it rewrote go to tombstones like any garbage, other garbage keeps gc's default grace period."""
    return gc(repo, grace=DEFAULT_GRACE, repack=repacker_for(max_unused, invert=invert, progress=progress),
              progress=progress)


@dataclass
class Survey:
    """The frames as they are: every pack's entries (from its .idx, the truth) and where the index reads each
    chunk the mark keeps."""

    entries: dict[bytes, list[Entry]]
    sizes: dict[bytes, int]                  # pack -> bytes of .pack and .idx
    loc: dict[bytes, Location]               # live chunk -> its indexed location (in a pack of `entries`)
    holders: dict[bytes, set[bytes]]         # chunk -> the packs holding a frame of it
    heads: dict[tuple[bytes, int], bytes | None] = field(default_factory=dict)  # (pack, offset) -> frame base


@dataclass
class Plan:
    """What repack will do."""

    want: dict[bytes, bytes | None] = field(default_factory=dict)  # chunk to keep -> base its frame names
    changed: set[bytes] = field(default_factory=set)   # chunks whose frame will be new
    rewrite: set[bytes] = field(default_factory=set)   # packs to rewrite
    write: list[bytes] = field(default_factory=list)   # chunks whose frames go into new packs


def survey(repo: Repository, reach: Reach) -> Survey:
    """Read the packs' .idx files and the index locations of the live chunks."""
    entries = pack_entries(repo)
    sizes = {}
    for p in entries:
        sizes[p] = sum(_stat(pack_path(repo.store.packs_dir, p, s)) for s in (".pack", ".idx"))
    holders: dict[bytes, set[bytes]] = defaultdict(set)
    for p, es in entries.items():
        for e in es:
            holders[e.chunk].add(p)
    locs = repo.store.index.get_many(list(reach.live_chunks))
    return Survey(entries, sizes, {c: loc for c, loc in locs.items() if loc.pack in entries}, holders)


def repack(repo: Repository, reach: Reach, result: GcResult, *, max_unused: float = 0.10, invert: bool = False,
           progress: Progress | None = None) -> list[bytes]:
    """Repack as the module docstring says; returns the packs now fully garbage (their kept frames are in new
    packs). `reach` is updated to what is stored afterwards (dropped bases leave `bases` and `base_of`)."""
    progress = progress or NoProgress()
    st = survey(repo, reach)
    pinned: set[bytes] = set()
    verified: set[bytes] = set()
    while True:
        plan = make_plan(repo, reach, st, pinned, max_unused=max_unused, invert=invert)
        bad = _verify(repo, reach, st, [c for c in plan.write if c not in verified], verified, progress)
        if not bad:
            break
        pinned |= bad  # a pack with a bad frame is left as it is; plan again around it
    if not plan.rewrite:
        _settle_reach(reach, plan, [])
        return []
    sink = repo.store.sink(repo.config.pack_size)
    try:
        _write(repo, reach, st, plan, sink, progress)
        sealed = sink.finish()
    except BaseException:
        sink.abort()
        raise
    new = {p for p, _ in sealed}
    done = sorted(plan.rewrite - new)  # a pack written again byte for byte is the same file: it stays
    written = sum(_stat(pack_path(repo.store.packs_dir, p, s)) for p in new for s in (".pack", ".idx"))
    result.repack_freed += sum(st.sizes[p] for p in done) - written
    _settle_reach(reach, plan, plan.write)
    return done


def make_plan(repo: Repository, reach: Reach, st: Survey, pinned: set[bytes], *, max_unused: float,
              invert: bool) -> Plan:
    """The frame every kept chunk will have, and the packs to rewrite (never a pinned one)."""
    old = reach.base_of
    limit = repo.config.max_delta_depth
    fixed = {c for c, loc in st.loc.items() if loc.pack in pinned}
    live = {c for c in reach.chunks if c in st.loc}
    want: dict[bytes, bytes | None] = {}
    if invert:
        want.update(inverted(repo, reach, live - fixed, limit))
    free = live - fixed - set(want)
    rule = base_rule(repo, reach, among=None if not invert and not fixed else free)
    for c in free:
        want[c] = None if c in rule.reencode else old.get(c)
    for c in fixed | {b for b in rule.keep if b in st.loc}:
        want[c] = old.get(c)
    for c in fixed:  # a pinned frame keeps its base, and that base its own
        b = old.get(c)
        while b is not None and b in st.loc and b not in want:
            want[b] = old.get(b)
            b = want[b]
    settle(want, fixed, limit, lambda b: repo.store.delta_depth(b, 64))
    needed = set(live)
    for c in live:
        b = want.get(c)
        while b is not None and b not in needed:
            needed.add(b)
            b = want.get(b)
    plan = Plan(want={c: want[c] for c in needed if c in want})
    plan.changed = {c for c, b in plan.want.items() if b != old.get(c)}
    plan.rewrite = _choose(repo, st, plan, pinned, max_unused)
    plan.write = [c for c in _pack_order(st, plan.want) if st.loc[c].pack in plan.rewrite]
    return plan


def inverted(repo: Repository, reach: Reach, eligible: set[bytes], limit: int) -> dict[bytes, bytes | None]:
    """The inverted frames: from each ref's tip down its first-parent history, a chunk whose newer version (the
    same chunk of the same tensor in the next newer kept commit) is planned becomes a delta against it while that
    stays within `limit` deltas; every other chunk met (a tip's, a tensor new in that commit) a full frame."""
    want: dict[bytes, bytes | None] = {}
    depth: dict[bytes, int] = {}
    walked: set[bytes] = set()
    for oid in _ref_order(repo):
        try:
            cur: bytes | None = repo.peel(oid)
        except CkstoreError:
            continue
        newer: dict[tuple[str, str], object] | None = None
        while cur is not None and cur not in walked:
            walked.add(cur)
            if cur in reach.commits and cur not in reach.archived:
                here = {}
                for t in repo.manifest_of(cur).tensors:
                    here[(t.file, t.name)] = t
                    n_t = newer.get((t.file, t.name)) if newer else None
                    same = (n_t is not None and n_t.dtype == t.dtype and n_t.nbytes == t.nbytes
                            and n_t.chunk_bytes == t.chunk_bytes)
                    for k, c in enumerate(t.chunks):
                        if c in want or c not in eligible:
                            continue
                        n = n_t.chunks[k] if same else None
                        if n is not None and n in want and depth[n] < limit:
                            want[c], depth[c] = n, depth[n] + 1
                        else:
                            want[c], depth[c] = None, 0
                newer = here
            parents = repo.parents(cur)
            cur = parents[0] if parents else None
    return want


def _ref_order(repo: Repository) -> list[bytes]:
    """The tips to walk: HEAD's branch first (its chains win where branches share chunks), then the other
    branches, remote-tracking branches and tags."""
    refs = repo.refs.list()
    try:
        head = repo.refs.head()
    except CkstoreError:
        head = None
    names = sorted(refs, key=lambda n: (n != head, not n.startswith(HEADS), not n.startswith(REMOTES),
                                        not n.startswith(TAGS), n))
    return list(dict.fromkeys(refs[n] for n in names))


def settle(want: dict[bytes, bytes | None], fixed: set[bytes], limit: int, outside: Callable[[bytes], int]) -> None:
    """Bound every chain of `want` to `limit` deltas and break any cycle (a pinned frame kept on its old base
    while its base was planned on a newer version) by making a chunk whose frame may change a full frame."""
    depth: dict[bytes, int] = {}
    for start in list(want):
        path: list[bytes] = []
        on_path: set[bytes] = set()
        cur: bytes | None = start
        while cur is not None and cur in want and cur not in depth:
            if cur in on_path:
                cycle = path[path.index(cur):]
                victim = next((x for x in cycle if x not in fixed), cycle[0])
                want[victim] = None
                path = path[:path.index(victim) + 1]
                break
            path.append(cur)
            on_path.add(cur)
            cur = want[cur]
        for x in reversed(path):
            b = want[x]
            d = 0 if b is None else (depth[b] if b in depth else outside(b)) + 1
            if d > limit and x not in fixed:
                want[x], d = None, 0
            depth[x] = d


def _choose(repo: Repository, st: Survey, plan: Plan, pinned: set[bytes], max_unused: float) -> set[bytes]:
    want = plan.want
    rewrite: set[bytes] = set()
    for c in plan.changed:
        rewrite |= st.holders.get(c, set())
    used: dict[bytes, int] = defaultdict(int)
    for c in want:
        used[st.loc[c].pack] += st.loc[c].length
    small = []
    for p, es in st.entries.items():
        total = sum(e.length for e in es)
        if used[p] and total - used[p] > max_unused * st.sizes[p]:
            rewrite.add(p)
        if used[p] and st.sizes[p] < repo.config.pack_size / SMALL:
            small.append(p)
    if len([p for p in small if p not in pinned]) >= 2:
        rewrite.update(small)
    for p, es in st.entries.items():  # a frame left behind must keep its base
        if p in rewrite or p in pinned:
            continue
        for e in es:
            loc = st.loc.get(e.chunk)
            if loc is not None and (loc.pack, loc.offset) == (p, e.offset) and e.chunk in want:
                continue  # a kept frame that stays: its base is kept with it
            base = _head(repo, st, p, e)
            if base is not None and base not in want:
                rewrite.add(p)
                break
    return rewrite - pinned


def _head(repo: Repository, st: Survey, pack: bytes, e: Entry) -> bytes | None:
    key = (pack, e.offset)
    if key not in st.heads:
        try:
            st.heads[key] = repo.store.frame_base(Location(pack, e.offset, e.length, e.raw_length), e.chunk)
        except (codec.FrameError, OSError, CkstoreError):
            st.heads[key] = None  # fsck's to report; a header that does not parse names no base
    return st.heads[key]


def _pack_order(st: Survey, want: dict[bytes, bytes | None]) -> list[bytes]:
    """The kept chunks in the order their frames sit in the packs (neighbours stay neighbours)."""
    return sorted(want, key=lambda c: (st.loc[c].pack, st.loc[c].offset))


def forest(chunks: Iterable[bytes], base_of: Callable[[bytes], bytes | None]) -> tuple[list, dict]:
    """(roots, children) of the delta relation among `chunks`: a root's base is outside them (or none)."""
    members = list(chunks)
    inside = set(members)
    kids: dict[bytes, list[bytes]] = defaultdict(list)
    roots = []
    for c in members:
        b = base_of(c)
        (kids[b] if b is not None and b in inside and b != c else roots).append(c)
    return roots, kids


def walk(roots: list[bytes], kids: dict[bytes, list[bytes]], visit: Callable[[bytes, object], object]) -> set:
    """Depth first from the roots, each chunk visited after its base with what visiting the base returned (ROOT
    for a root); only the chunks on the current path are held. Returns the chunks visited."""
    seen = set()
    stack: list[tuple[bytes, object]] = [(r, ROOT) for r in reversed(roots)]
    while stack:
        c, base = stack.pop()
        if c in seen:
            continue
        seen.add(c)
        got = visit(c, base)
        stack.extend((k, got) for k in reversed(kids.get(c, ())))
    return seen


def _verify(repo: Repository, reach: Reach, st: Survey, chunks: list[bytes], verified: set[bytes],
            progress: Progress) -> set[bytes]:
    """Decode and hash the stored frame of each chunk (this very frame, not another copy); the packs holding one
    that fails (or that depends on one that fails) are returned."""
    bad: set[bytes] = set()
    if not chunks:
        return bad
    roots, kids = forest(chunks, reach.base_of.get)
    progress.begin("repack: verifying", sum(st.loc[c].length for c in chunks))

    def check(c: bytes, base: object) -> object:
        loc = st.loc[c]
        progress.advance(loc.length)
        try:
            if base is FAILED:
                raise CorruptObject("chunk", c.hex(), "?", detail="its delta base did not verify")
            frame = repo.store.open_frame(c, repo.store.read_frame(loc))
            expected = reach.base_of.get(c)
            raw = codec.decode(frame, loc.raw_length, lambda b: _raw(repo, b, expected, base))
            if repo.store.scheme.chunk_id(raw) != c:
                raise CorruptObject("chunk", c.hex(), "?")
        except (CkstoreError, codec.FrameError, OSError):
            bad.add(loc.pack)
            return FAILED
        verified.add(c)
        return raw
    try:
        seen = walk(roots, kids, check)
    finally:
        progress.end()
    bad.update(st.loc[c].pack for c in chunks if c not in seen)  # on a cycle of old frames: nothing verifies it
    return bad


def _raw(repo: Repository, chunk: bytes, expected: bytes | None, base: object) -> memoryview:
    """The raw bytes of a frame's base: those handed down the walk when it is the expected one, else the store's."""
    if chunk == expected and isinstance(base, memoryview):
        return base
    return repo.store.get_chunk(chunk)


def _write(repo: Repository, reach: Reach, st: Survey, plan: Plan, sink, progress: Progress) -> None:
    """Write the planned frames, each base before the frames on it, each decoded and hashed as written."""
    roots, kids = forest(plan.write, plan.want.get)
    level = repo.config.zstd_level
    progress.begin("repack: writing", sum(st.loc[c].length for c in plan.write))

    def put(c: bytes, base: object) -> object:
        loc, b = st.loc[c], plan.want[c]
        frame = _new_frame(repo, reach, st, plan, c, base, level)
        raw = codec.decode(frame, loc.raw_length, lambda x: _raw(repo, x, b, base))
        if (got := repo.store.scheme.chunk_id(raw)) != c:
            raise CorruptObject("chunk", c.hex(), got.hex(), detail="a repacked frame does not decode "
                                "to its chunk; nothing was changed")
        sink.add(c, repo.store.scheme.seal_frame(c, frame), loc.raw_length, again=True)
        progress.advance(loc.length)
        return raw
    try:
        walk(roots, kids, put)
    finally:
        progress.end()


def _new_frame(repo: Repository, reach: Reach, st: Survey, plan: Plan, c: bytes, base: object,
               level: int) -> bytes:
    """The copied, flipped or re-encoded frame of `c` (as the codec reads it: sealed when written)."""
    loc, b = st.loc[c], plan.want[c]
    store = repo.store
    if c not in plan.changed:
        return bytes(store.open_frame(c, store.read_frame(loc)))
    if b is not None and reach.base_of.get(b) == c and b in st.loc:
        newer = store.open_frame(b, store.read_frame(st.loc[b]))  # b XOR c: the same payload serves c against b
        kind, _, width, _, length = codec.HEADER.unpack_from(newer)
        if kind == codec.GROUPED and length == loc.raw_length:
            return codec.HEADER.pack(codec.GROUPED, codec.FLAG_XOR, width, 0, length) + b + bytes(
                newer[codec.HEADER.size + 32:])
    width = codec.HEADER.unpack_from(store.open_frame(c, store.read_frame(loc)))[2]
    raw = repo.store.get_chunk(c, keep=False)
    if b is None:
        return codec.encode(raw, width, level)
    return codec.encode(raw, width, level, base=_raw(repo, b, b, base), base_id=b)


def _settle_reach(reach: Reach, plan: Plan, written: list[bytes]) -> None:
    """What the mark says afterwards: dropped bases are no longer kept, rewritten frames name their new bases."""
    gone = reach.bases - set(plan.want)
    reach.bases -= gone
    for c in gone:
        reach.base_of.pop(c, None)
    for c in written:
        if plan.want[c] is None:
            reach.base_of.pop(c, None)
        else:
            reach.base_of[c] = plan.want[c]


def _stat(path: os.PathLike) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
