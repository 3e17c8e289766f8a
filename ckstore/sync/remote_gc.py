"""gc --remote and forget --remote: retention and garbage collection on a directory or S3 remote.

gc --remote NAME:
  1. mark what the remote's roots keep — every branch, tag and `refs/archive/*` ref, and every value a ref held
     within the grace period by the remote's `logs/push/*` — walking its history through `dropped/` records,
     while pushes keep running;
  2. take `locks/gc` (sync.remote_leases) and wait until no push holds a lease; re-read the roots and mark what
     is new (a push may have landed since step 1); list packs and objects;
  3. keep every delta base of a kept chunk (frame headers by ranged GET, cached per pack);
  4. a pack none of whose chunks is kept, an object nothing reaches, a stray `.pack`/`.idx` half: garbage.
     `gc/pending.json` records when each garbage key was first seen unreferenced; a key is deleted only once it
     has been for the grace period (default 1 h; `now`: at once, refused while a lease lives). Tags and commits
     go first, then other objects, then packs (`.idx` before `.pack`): killed midway, the remote holds only
     unreferenced garbage and no commit whose data is gone.
forget --remote NAME POLICY: `engine.forget.candidates` and `model.retention.decide` over the remote's history
(a RemoteView), then `dropped/<id>` records and the dropped tags deleted on the remote (logged in `logs/push/`).
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
import warnings as pywarnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from ..engine import forget as retention
from ..engine.repository import Repository
from ..errors import UsageError
from ..fs.locks import LOCK_WAIT
from ..model.objects import Commit, Tag
from ..model.refnames import short
from ..model.retention import Policy
from ..results import ForgetResult, GcResult, human_bytes
from ..storage import remotes
from ..storage.audit import whoami
from ..storage.packs import Entry
from ..storage.records import Dropped
from ..transport.base import Transport
from . import session
from .remote_leases import RemoteGcLock
from .remote_view import RemoteReach, RemoteView, mark, mark_bases, pack_size, record_key, remote_packs
from .remote_refs import read_ref
from .session import Session, io_pool, obj_key, open_spec, pack_key, remote_config

DEFAULT_GRACE = 3600.0
PENDING = "gc/pending.json"
MAX_PENDING = 64 << 20
_LOG_TIME = re.compile(r"^logs/push/(\d{8}T\d{6}\.\d{6})Z-")


class RemoteGcWarning(UserWarning):
    """Something gc --remote kept because it could not be sure (a damaged .idx, chunks a kept commit lacks)."""


@dataclass
class RemoteGcResult(GcResult):
    """A GcResult for a remote: keys are deleted, not tombstoned; `pending_bytes` are garbage younger than grace."""

    remote: str = ""
    url: str = ""
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line of what happened."""
        verb = "would delete" if self.dry_run else "deleted"
        return (f"gc {self.remote} ({self.url}): {self.live_commits} commits kept; {verb} {self.packs_swept} packs "
                f"and {self.objects_swept} objects ({human_bytes(self.bytes_swept)}); {self.young_skipped} garbage "
                f"keys ({human_bytes(self.tombstoned_bytes)}) wait for their grace period")


@dataclass
class _Plan:
    packs: dict[bytes, int] = field(default_factory=dict)   # garbage pack -> bytes
    objects: dict[bytes, int] = field(default_factory=dict)
    strays: dict[str, int] = field(default_factory=dict)
    kept: int = 0
    partly: list[dict] = field(default_factory=list)

    def keys(self) -> dict[str, int]:
        out = {pack_key(p): n for p, n in self.packs.items()}
        out.update({obj_key(o): n for o, n in self.objects.items()})
        out.update(self.strays)
        return out


def gc_remote(repo: Repository, name: str, *, grace: float = DEFAULT_GRACE, now: bool = False,
              dry_run: bool = False, wait: float = LOCK_WAIT, transport: Transport | None = None,
              clock: Callable[[], float] = time.time) -> RemoteGcResult:
    """Collect garbage on the remote `name` as the module docstring says; returns what was (or would be) deleted."""
    if not isinstance(grace, (int, float)) or grace < 0:
        raise UsageError("--grace must not be negative")
    spec = remotes.get(repo.dir, name)
    remote = Session(transport or open_spec(spec, create=False), spec.name, repo.store.scheme)
    effective = 0.0 if now else float(grace)
    result = RemoteGcResult(dry_run=dry_run, grace=effective, remote=spec.name, url=remote.url)
    io = io_pool()
    try:
        remote_config(remote)
        view = RemoteView(remote, io, result.warnings)
        reach = mark(view, _roots(view, effective, clock()))
        if dry_run:
            _finish(repo, remote, view, reach, result, effective, clock(), delete=False)
        else:
            with RemoteGcLock(remote, "gc") as lock:
                lock.wait_for_writers(wait, refuse_why="gc --now refused" if now else None)
                fresh_view = RemoteView(remote, io, result.warnings, objects=view.objects)
                fresh = {k: v for k, v in _roots(fresh_view, effective, clock()).items() if k not in reach.objects}
                mark(fresh_view, fresh, into=reach)
                _finish(repo, remote, fresh_view, reach, result, effective, clock(), delete=True)
    finally:
        io.shutdown(wait=True)
        if transport is None:
            remote.t.close()
    for w in result.warnings:
        pywarnings.warn(w, RemoteGcWarning, stacklevel=2)
    return result


def _roots(view: RemoteView, grace: float, now: float) -> dict[bytes, str]:
    """Every ref of the remote, and the values its push log says a ref held within `grace` seconds."""
    out = {oid: name for name, oid in view.refs.list().items()}
    if grace <= 0:
        return out
    since = now - grace
    recent = []
    for key in view.remote.list("logs/push"):
        m = _LOG_TIME.match(key)
        if m is None:
            continue
        when = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S.%f").replace(tzinfo=timezone.utc).timestamp()
        if when >= since:
            recent.append(key)
    for key, data in zip(recent, view.io.map(lambda k: view.remote.get_small(k, 1 << 16), recent)):
        try:
            body = json.loads(data or b"{}")
        except ValueError:
            continue
        for value in (body.get("old"), body.get("new")) if isinstance(body, dict) else ():
            if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
                oid = bytes.fromhex(value)
                if oid not in out and oid not in view.dropped_ids and view.get(oid) is not None:
                    out[oid] = f"push log {key}"
    return out


def _plan(remote: Session, reach: RemoteReach, packs: dict[bytes, list[Entry] | None], strays: set[str],
          objects: set[bytes]) -> _Plan:
    plan = _Plan()
    live = reach.live_chunks
    for pack_id, entries in packs.items():
        if entries is None:
            plan.kept += 1
            continue
        used = [e for e in entries if e.chunk in live]
        if not used and entries:
            plan.packs[pack_id] = pack_size(entries)
            continue
        if not entries:
            plan.packs[pack_id] = pack_size(entries)
            continue
        plan.kept += 1
        unused = sum(e.length for e in entries) - sum(e.length for e in used)
        if unused:
            plan.partly.append({"pack": pack_id.hex(), "size": pack_size(entries), "unused": unused})
    for key in strays:
        st = remote.r.stat(key)
        if st is not None:
            plan.strays[key] = st.size
    for oid in objects - reach.objects:
        st = remote.r.stat(obj_key(oid))
        if st is not None:
            plan.objects[oid] = st.size
    return plan


def _read_pending(remote: Session) -> dict[str, float]:
    data = remote.get_small(PENDING, MAX_PENDING)
    try:
        raw = json.loads(data) if data else {}
    except ValueError:
        raw = {}
    if not isinstance(raw, dict):
        return {}
    return {k: float(v) for k, v in raw.items() if isinstance(k, str) and isinstance(v, (int, float))}


def _finish(repo: Repository, remote: Session, view: RemoteView, reach: RemoteReach, result: RemoteGcResult,
            grace: float, now: float, *, delete: bool) -> None:
    """List, plan and (with `delete`) delete what is past its grace; fill `result`."""
    packs, strays, objects = remote_packs(repo, remote, view.io, result.warnings)
    mark_bases(repo, view, reach, packs)
    if reach.missing:
        result.warnings.append(f"{len(reach.missing)} chunks that kept commits name are not on {remote.url}: "
                               "run `ckstore fsck --remote`")
    plan = _plan(remote, reach, packs, strays, objects)
    garbage = plan.keys()
    pending = _read_pending(remote)
    seen = {k: pending.get(k, now) for k in garbage}
    due = {k for k in garbage if now - seen[k] >= grace}
    result.live_commits, result.live_chunks = len(reach.commits), len(reach.live_chunks)
    result.packs_kept, result.partly_garbage = plan.kept, plan.partly
    result.packs_swept = sum(pack_key(p) in due for p in plan.packs)
    result.objects_swept = sum(obj_key(o) in due for o in plan.objects)
    result.bytes_swept = sum(garbage[k] for k in due)
    result.young_skipped = len(garbage) - len(due)
    result.tombstoned_bytes = sum(n for k, n in garbage.items() if k not in due)
    if not delete:
        return
    first, later = [], []
    for oid in plan.objects:
        if obj_key(oid) in due:
            (first if _is_history(view, oid) else later).append(obj_key(oid))
    for key in first + later:
        remote.r.delete(key)
    cache = remotes.cache_dir(repo.dir, remote.name)
    for pack_id in plan.packs:
        if pack_key(pack_id) in due:
            remote.r.delete(pack_key(pack_id, ".idx"))
            remote.r.delete(pack_key(pack_id))
            for suffix in (".idx", ".bases"):
                (cache / f"{pack_id.hex()}{suffix}").unlink(missing_ok=True)
    for key in plan.strays:
        if key in due:
            remote.r.delete(key)
    result.bytes_freed = result.bytes_swept
    remote.r.put(PENDING, json.dumps({k: v for k, v in sorted(seen.items()) if k not in due}).encode())
    repo.refs.audit.append("gc-remote", f"remote:{remote.name}", None, None,
                           f"{remote.url}: deleted {len(due)} keys ({result.bytes_freed} bytes), grace {grace:g} s")


def _is_history(view: RemoteView, oid: bytes) -> bool:
    """True for a commit or tag object (deleted before manifests and packs), or one that cannot be read."""
    try:
        obj = view.get(oid, session.MAX_MANIFEST)
    except Exception:  # noqa: BLE001 - unreadable garbage: delete it first, nothing can rely on it
        return True
    return isinstance(obj, (Commit, Tag)) or obj is None


# ------------------------------------------------------------------------------------------------- forget
def forget_remote(repo: Repository, name: str, policy: Policy, *, dry_run: bool = False, now: float | None = None,
                  transport: Transport | None = None) -> ForgetResult:
    """Apply `policy` to the remote's branches and tags: dropped commits get `dropped/<id>` records on the remote,
    tags naming only dropped commits are deleted there (logged); gc --remote frees the bytes later."""
    now = time.time() if now is None else now
    spec = remotes.get(repo.dir, name)
    remote = Session(transport or open_spec(spec, create=False), spec.name, repo.store.scheme)
    io = io_pool()
    warnings: list[str] = []
    try:
        remote_config(remote)
        view = RemoteView(remote, io, warnings, archive_refs=False)
        tips = list(view.refs.list().values())
        view.load_history(tips)
        p = retention.plan(view, policy, now)
        dropped, tags, records = p.dropped, p.tags, p.records
        result = p.result(view, policy, dry_run, _freed(repo, remote, view, records, set(tags)))
        if dry_run or not dropped:
            return result
        list(io.map(lambda r: remote.put_new(record_key(r.oid), r.encode()), records.values()))
        for ref, oid in tags.items():
            cur, _ = read_ref(remote, ref)
            if cur != oid:
                continue  # tags never move; one recreated meanwhile is not ours to delete
            remote.r.delete(ref)
            _log(remote, ref, oid, policy)
        repo.refs.audit.append("forget-remote", f"remote:{spec.name}", None, None,
                               f"{remote.url}: {len(dropped)} commits dropped, {len(p.decided) - len(dropped)} kept, "
                               f"tags deleted: {', '.join(short(t) for t in tags) or 'none'}; policy: "
                               f"{policy.describe()}")
        return result
    finally:
        io.shutdown(wait=True)
        if transport is None:
            remote.t.close()


def _freed(repo: Repository, remote: Session, view: RemoteView, records: dict[bytes, Dropped],
           tags: set[str]) -> int:
    """Bytes of the packs gc --remote could delete once these records are written and tags deleted (whole packs:
    what the kept commits still share stays)."""
    start = {oid: name for name, oid in view.refs.list().items()}
    start.update({oid: name for name, oid in view.archive.items()})
    before = mark(view, start)
    kept = {oid: name for oid, name in start.items() if name not in tags}
    after = mark(view, kept, dropping=records)
    packs, _, _ = remote_packs(repo, remote, view.io, [])
    total = 0
    for entries in packs.values():
        chunks = {e.chunk for e in entries or ()}
        if chunks & before.chunks and not chunks & after.chunks:
            total += pack_size(entries or [])
    return total


def _log(remote: Session, ref: str, old: bytes, policy: Policy) -> None:
    stamp = datetime.now(timezone.utc)
    key = f"logs/push/{stamp.strftime('%Y%m%dT%H%M%S.%fZ')}-{secrets.token_hex(6)}.json"
    body = {"user": whoami(), "host": socket.gethostname(), "time": stamp.timestamp(), "ref": ref,
            "old": old.hex(), "new": None, "forced": False, "action": "forget", "policy": policy.describe()}
    remote.put_new(key, json.dumps(body, sort_keys=True).encode())
