"""The rules of history: making commits and reverts, moving branches and tags, each ref change audited."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import AlreadyExists, ProtectedRef, UnknownRevision, UsageError
from ..formats import scan_path, walk_source
from ..formats.statedict import flatten, scan_state
from ..model import graph, metadata
from ..model import stats as tensor_stats
from ..model.objects import Commit, Manifest, Tag
from ..model.progress import NoProgress, Progress
from ..model.refnames import HEADS, TAGS, branch_ref, tag_ref
from ..storage.audit import whoami
from .capture import capture_env, checkpoint_record
from .protect import check_move
from .repository import Repository
from .snapshot import CachedFile, SnapshotSettings, Snapshotter


@dataclass(frozen=True)
class Committed:
    """What a commit wrote: its id and object, the manifest, the branch moved, and the bytes of new frames."""

    oid: bytes
    commit: Commit
    manifest: Manifest
    branch: str
    new_bytes: int


def commit(repo: Repository, src: str | os.PathLike | dict, message: str, record: dict, *,
           branch: str | None = None, tag: str | None = None, author: str | None = None, env: bool = True,
           progress: Progress | None = None) -> Committed:
    """Snapshot a file, a directory or an in-memory state dict as a new commit on `branch` (default HEAD's);
    `record` is the metadata split into sections (model.metadata.split_sections). Holds a writer lease: a gc
    sweeps nothing while the commit dedups against what is stored."""
    with repo.writing("commit"):
        return _commit(repo, src, message, record, branch=branch, tag=tag, author=author, env=env, progress=progress)


def _commit(repo: Repository, src: str | os.PathLike | dict, message: str, record: dict, *, branch: str | None,
            tag: str | None, author: str | None, env: bool, progress: Progress | None) -> Committed:
    author = author or whoami()
    record = checkpoint_record(src, record)  # a Trainer checkpoint-N/ directory: its trainer_state.json
    metadata.check_encodable({"message": message, "author": author}, "commit")
    metadata.validate_schema(repo.config.schema, {**record, "message": message, "author": author})
    ref = branch_ref(branch or repo.head_branch())
    new_tag = tag_ref(tag) if tag else None
    if new_tag and repo.refs.read(new_tag):
        raise AlreadyExists(f"tag {tag!r} already exists", hint="tags never move; pick another name")
    with ThreadPoolExecutor(1, thread_name_prefix="ckstore-env") as side:
        # git subprocesses and package lookups (~60 ms) overlap the snapshot instead of preceding it
        env_job = side.submit(capture_env) if env else None
        tip = repo.refs.read(ref) or repo.refs.read(repo.refs.head())
        manifest, mid, written = snapshot(repo, src, progress or NoProgress(), repo.manifest_of(tip) if tip else None)
        captured = _storable(env_job.result()) if env_job else {}
    with repo.refs.locked(ref) as (current, set_ref):
        parent = current if current else repo.refs.read(repo.refs.head())
        new = Commit(mid, (parent,) if parent else (), author, time.time(), message, record.get("step"),
                     record["metrics"], record["params"], record["data"], record["seeds"], captured, record["extra"])
        oid = repo.store.put_object(new)
        check_move(repo, ref, current, oid)
        set_ref(oid, "commit", message)
    repo.remember(oid, new)
    if new_tag:
        repo.refs.update(new_tag, oid, None, action="tag", message=message)
    return Committed(oid, new, manifest, ref.removeprefix(HEADS), written)


def _storable(value: Any) -> Any:
    """The captured environment with every string made valid UTF-8 (a non-UTF-8 argument in sys.argv arrives as
    lone surrogates, which no object can store): such characters are written as backslash escapes."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_storable(v) for v in value]
    return value


def snapshot(repo: Repository, src: str | os.PathLike | dict, progress: Progress,
             parent: Manifest | None) -> tuple[Manifest, bytes, int]:
    """Store `src`'s chunks and its manifest: (manifest, its id, bytes of new frames written). A Manifest whose
    chunks are all stored here (shards committed apart, joined into one checkpoint) is stored as it is."""
    if isinstance(src, Manifest):
        return _stored_manifest(repo, src), repo.store.put_object(src), 0
    stats: dict[str, tuple[str, os.stat_result]] = {}
    if isinstance(src, dict):
        tensors, tree = flatten(src)
        sources: list = [scan_state(tensors)]
    else:
        tree, sources = None, []
        for path, rel in walk_source(src):
            st = os.stat(path)  # before reading: a change during the read makes the next stat differ
            hit = repo.stat_cache.get(str(path), rel, st, repo.config.chunk_size)
            if hit and any(tensor_stats.stale(t.stats) for t in hit[1]):
                hit = None  # cached by an older build, without histograms: read the file again to compute them
            sources.append(CachedFile(*hit) if hit else scan_path(path, rel))
            stats[rel] = (str(path), st)
    cfg = repo.config
    writer = repo.store.sink(cfg.pack_size)
    progress.begin("commit", sum(f.recipe.size if isinstance(f, CachedFile) else f.size for f in sources))
    try:
        snap = Snapshotter(repo.store, writer, repo.pool, SnapshotSettings(cfg.chunk_size, cfg.zstd_level,
                                                                          cfg.max_delta_depth, cfg.uses("cdc")),
                           progress.advance, parent)
        manifest = snap.manifest(sources, tree)
        writer.finish()
        repo.stat_cache.put([(*stats[f.recipe.path], cfg.chunk_size, f.recipe, f.tensors)
                             for f in snap.fresh if f.recipe.path in stats])
    except BaseException:
        writer.abort()
        raise
    finally:
        progress.end()
    return manifest, repo.store.put_object(manifest), writer.bytes_written


def _stored_manifest(repo: Repository, manifest: Manifest) -> Manifest:
    """`manifest` if it is well formed and every chunk it needs is stored here; UsageError otherwise."""
    try:
        checked = Manifest.from_dict(manifest.to_dict())
    except ValueError as exc:
        raise UsageError(f"cannot commit a malformed manifest: {exc}") from None
    wanted = list(checked.chunk_ids())
    missing = len(wanted) - len(repo.store.index.get_many(wanted))
    if missing:
        raise UsageError(f"cannot commit a manifest whose data is not stored here ({missing} chunks missing)")
    return manifest


def revert(repo: Repository, rev: str, reason: str, *, branch: str | None = None) -> tuple[bytes, Commit, str]:
    """A new commit on `branch` whose checkpoint is `rev`'s, recording why: (id, commit, branch)."""
    if not reason.strip():
        raise UsageError("a revert needs a reason", hint="pass --reason TEXT")
    target_id = repo.resolve(rev)
    target = repo.commit(target_id)
    ref = branch_ref(branch or repo.head_branch())
    with repo.writing("revert"), repo.refs.locked(ref) as (current, set_ref):
        if current is None:
            raise UnknownRevision(f"branch {ref.removeprefix(HEADS)!r} has no commits to revert")
        extra = {**target.extra, "revert_reason": reason}
        new = Commit(target.manifest, (current,), whoami(), time.time(), f"Revert to {target_id.hex()[:12]}: {reason}",
                     target.step, target.metrics, target.params, target.data, target.seeds, target.env, extra,
                     reverted_from=target_id)
        oid = repo.store.put_object(new)
        check_move(repo, ref, current, oid)
        set_ref(oid, "revert", f"to {target_id.hex()}: {reason}")
    repo.remember(oid, new)
    return oid, new, ref.removeprefix(HEADS)


def reset(repo: Repository, branch: str, rev: str, reason: str, *, force: bool = False) -> tuple[bytes | None, bytes]:
    """Move `branch` to `rev`: (old tip, new tip). Commits that would leave the branch need `force`."""
    if not reason.strip():
        raise UsageError("a reset needs a reason", hint="pass --reason TEXT")
    ref = branch_ref(branch)
    if repo.refs.read(ref) is None:
        if repo.refs.read(TAGS + branch):
            raise ProtectedRef(f"{branch!r} is a tag, and tags never move")
        raise UnknownRevision(f"no branch named {branch!r}")
    target = repo.resolve(rev)
    with repo.refs.locked(ref) as (current, set_ref):
        if current and not force and graph.ff_status(current, target, repo.parents) in ("behind", "diverged"):
            lost = len(graph.ancestors(current, repo.parents) - graph.ancestors(target, repo.parents))
            raise ProtectedRef(f"resetting {branch} to {rev} would drop {lost} commit(s) from the branch",
                               hint="pass --force if that is what you want (the audit log keeps the old tip)")
        check_move(repo, ref, current, target)
        set_ref(target, "reset", reason)
    return current, target


def create_branch(repo: Repository, name: str, rev: str = "HEAD", *, force: bool = False) -> bytes:
    """Start branch `name` at `rev`; an existing branch moves only with `force`."""
    ref = branch_ref(name)
    oid = repo.resolve(rev)
    with repo.refs.locked(ref) as (current, set_ref):
        if current is not None and not force:
            raise AlreadyExists(f"branch {name!r} already exists", hint="pass --force to move it")
        check_move(repo, ref, current, oid)
        set_ref(oid, "branch", f"from {rev}")
    return oid


def delete_branch(repo: Repository, name: str, *, force: bool = False) -> bytes:
    """Delete branch `name` (not HEAD's). Commits no other ref reaches are only dropped with `force`."""
    ref = branch_ref(name)
    if ref == repo.refs.head():
        raise ProtectedRef(f"cannot delete the current branch {name!r}", hint="switch to another branch first")
    old = repo.refs.read(ref)
    if old is None:
        raise UnknownRevision(f"no branch named {name!r}")
    check_move(repo, ref, old, None)
    if not force:
        others = [oid for r, oid in repo.commit_refs().items() if r != ref]
        kept: set[bytes] = set()
        for oid in others:
            kept |= graph.ancestors(oid, repo.parents)
        if old not in kept:
            lost = len(graph.ancestors(old, repo.parents) - kept)
            raise ProtectedRef(f"branch {name!r} has {lost} commit(s) that no other branch or tag reaches",
                               hint=f"merge or tag them first, or delete anyway with `ckstore branch -D {name}` "
                                    "(the audit log keeps the old tip)")
    repo.refs.update(ref, None, old, action="branch-delete")
    return old


def switch(repo: Repository, name: str) -> None:
    """Make `name` the branch new commits go to by default (HEAD)."""
    ref = branch_ref(name)
    if repo.refs.read(ref) is None and repo.refs.list(HEADS):
        raise UnknownRevision(f"no branch named {name!r}", hint=f"create it with `ckstore branch {name}`")
    repo.refs.set_head(ref)


def create_tag(repo: Repository, name: str, rev: str = "HEAD", *, message: str | None = None) -> bytes:
    """Tag `rev` as `name` (annotated when `message` is given). A name deleted earlier may be reused; the audit
    entry then records the id it named before."""
    ref = tag_ref(name)
    oid = repo.resolve(rev)
    with repo.writing("tag"), repo.refs.locked(ref) as (current, set_ref):
        if current is not None:
            raise AlreadyExists(f"tag {name!r} already exists", hint="tags never move; delete it first with -d")
        target = repo.store.put_object(Tag(oid, name, whoami(), time.time(), message)) if message else oid
        before = _last_value(repo, ref)
        if before is not None and before != target:
            set_ref(target, "tag-recreate", f"{name} was {before.hex()}, now {target.hex()}"
                    + (f": {message}" if message else ""))
        else:
            set_ref(target, "tag", message or "")
    return oid


def delete_tag(repo: Repository, name: str) -> bytes:
    """Delete tag `name`; the audit log keeps what it named."""
    ref = tag_ref(name)
    old = repo.refs.read(ref)
    if old is None:
        raise UnknownRevision(f"no tag named {name!r}")
    check_move(repo, ref, old, None)
    repo.refs.update(ref, None, old, action="tag-delete")
    return old


def _last_value(repo: Repository, ref: str) -> bytes | None:
    """The id `ref` last held according to the audit log (None if it never held one)."""
    for e in reversed(repo.refs.audit.entries()):
        if e.ref == ref:
            value = e.new or e.old
            return bytes.fromhex(value) if value else None
    return None


def tag_message(repo: Repository, oid: bytes) -> str:
    """The message of an annotated tag object, "" for a lightweight tag."""
    obj: Any = repo.store.get_commit_or_object(oid)
    return obj.message if isinstance(obj, Tag) else ""


def merge(repo: Repository, other: str, *, take: str = "ours", message: str | None = None,
          branch: str | None = None) -> tuple[bytes, Commit | None, str]:
    """Join `other` into `branch` (default HEAD's) with a two-parent commit whose checkpoint is the side `take`
    names ("ours", "theirs", or any revision): (id, commit, status). A branch `other` already contains is
    fast-forwarded (status "fast-forward", no new commit); one that contains `other` is "up-to-date"."""
    ref = branch_ref(branch or repo.head_branch())
    theirs = repo.resolve(other)
    with repo.writing("merge"), repo.refs.locked(ref) as (current, set_ref):
        if current is None:
            raise UnknownRevision(f"branch {ref.removeprefix(HEADS)!r} has no commits to merge into")
        status = graph.ff_status(current, theirs, repo.parents)
        if status in ("same", "behind"):
            return current, None, "up-to-date"
        if status == "fast-forward" and take in ("ours", "theirs"):
            check_move(repo, ref, current, theirs)
            set_ref(theirs, "merge", f"fast-forward to {other}")
            return theirs, None, "fast-forward"
        source = {"ours": current, "theirs": theirs}.get(take) or repo.resolve(take)
        base = repo.commit(source)
        text = message or f"Merge {other} into {ref.removeprefix(HEADS)}" + (
            f" (checkpoint of {take})" if take not in ("ours",) else "")
        new = Commit(base.manifest, (current, theirs), whoami(), time.time(), text, base.step, base.metrics,
                     base.params, base.data, base.seeds, base.env, {**base.extra, "merge_took": source.hex()})
        oid = repo.store.put_object(new)
        check_move(repo, ref, current, oid)
        set_ref(oid, "merge", f"{other} ({theirs.hex()}), checkpoint of {source.hex()}")
    repo.remember(oid, new)
    return oid, new, "merged"
