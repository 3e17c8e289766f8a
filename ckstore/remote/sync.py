"""Pull and clone, and the sync verbs in one place: `push` (push.py), `fetch` and on-demand `ensure_chunks`
(fetch.py) build on `session.py`'s checked view of a remote (docs/design.md, "Remotes")."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .. import graph
from ..config import DEFAULT_CHUNK
from ..errors import UnknownRevision
from ..progress import NoProgress, Progress
from ..refs import check_ref_name
from . import remotes
from .base import Transport
from .fetch import ensure_chunks, fetch, fetch_with
from .push import push
from .remotes import RemoteSpec
from .select import manifest_chunks, parse_filter
from .session import HEADS, NonFastForward, RemoteRefMoved, Session, SyncResult, open_spec, remote_config

if TYPE_CHECKING:
    from ..repo import Repo

__all__ = ["push", "fetch", "pull", "clone", "ensure_chunks", "remote_remove", "default_clone_dir", "parse_filter",
           "manifest_chunks", "SyncResult", "NonFastForward", "RemoteRefMoved"]


def pull(repo: Repo, remote_name: str | None = None, branch: str | None = None, *, force: bool = False,
         progress: Progress | None = None, transport: Transport | None = None) -> SyncResult:
    """Fetch, then fast-forward the local branch to the remote's (`force`: reset it; audited)."""
    spec = remotes.get(repo.dir, remote_name)
    remote = Session(transport or open_spec(spec, create=False), spec.name)
    try:
        result, _ = fetch_with(repo, spec, remote, progress or NoProgress(), action="pull")
    finally:
        if transport is None:
            remote.t.close()
    name = check_ref_name(branch or repo.head_branch())
    theirs = repo.refs.read(f"refs/remotes/{spec.name}/{name}")
    if theirs is None:
        raise UnknownRevision(f"remote {spec.name} has no branch {name!r}", hint="see `ckstore branch` and the remote")
    ref = HEADS + name
    with repo.refs.locked(ref) as (current, set_ref):
        status = "updated"
        if current == theirs:
            status = "up-to-date"
        elif current is None:
            set_ref(theirs, "pull", f"{spec.name}/{name}")
            status = "created"
        elif graph.is_ancestor(current, theirs, repo._parents):
            set_ref(theirs, "pull", f"{spec.name}/{name}")
        elif graph.is_ancestor(theirs, current, repo._parents):
            status = "ahead"
        elif force:
            set_ref(theirs, "pull-force", f"{spec.name}/{name} (was {current.hex()})")
            status = "forced"
        else:
            raise NonFastForward(f"{name} and {spec.name}/{name} have diverged: {current.hex()[:12]} is not an "
                                 f"ancestor of {theirs.hex()[:12]}, so pull cannot fast-forward",
                                 hint="pass --force to reset the branch to the remote's (the audit log keeps the "
                                      "old tip), or push your commits to another branch first")
    result.refs.append({"ref": ref, "old": current.hex() if current else None, "new": theirs.hex(),
                        "status": status, "forced": status == "forced"})
    return result


def default_clone_dir(url: str) -> str:
    path = url.split("://", 1)[-1].rstrip("/")
    name = path.rsplit("/", 1)[-1] or "repo"
    return name.removesuffix(".ckstore") or "repo"


def clone(url: str, dest: str | os.PathLike | None = None, *, filter: str | list[str] | None = None,
          metadata_only: bool = False, endpoint_url: str | None = None, region: str | None = None,
          name: str = "origin", progress: Progress | None = None, transport: Transport | None = None) -> Repo:
    """A new repository at `dest` holding the remote's history; `repo.last_transfer` says what moved."""
    from ..repo import Repo
    partial = parse_filter(filter, metadata_only)
    spec = RemoteSpec(remotes.check_remote_name(name), remotes.normalize_url(url), endpoint_url or None,
                      region or None, partial)
    remote = Session(transport or open_spec(spec, create=False), spec.name)
    try:
        cfg = remote_config(remote)                  # before anything is created: a bad URL leaves nothing behind
        target = Path(dest if dest is not None else default_clone_dir(spec.url)).resolve()
        created = not target.exists()
        chunk = cfg.get("chunk_size") if isinstance(cfg.get("chunk_size"), int) else DEFAULT_CHUNK
        required = (cfg.get("schema") or {}).get("required") if isinstance(cfg.get("schema"), dict) else None
        repo = Repo.init(target, chunk_size=max(chunk, 4096), required=required or None)
        try:
            remotes.add(repo.dir, name, spec.url, endpoint_url=spec.endpoint_url, region=spec.region,
                        partial=partial)
            result, fetched = fetch_with(repo, spec, remote, progress or NoProgress(), action="clone")
            for branch, oid in sorted(fetched.heads.items()):
                repo.refs.update(HEADS + branch, oid, None, action="clone", message=spec.url)
                result.refs.append({"ref": HEADS + branch, "old": None, "new": oid.hex(), "status": "created",
                                    "forced": False})
            head = fetched.head if fetched.head in fetched.heads else (
                "main" if "main" in fetched.heads else next(iter(sorted(fetched.heads)), None))
            if head:
                repo.refs.set_head(HEADS + head)
        except BaseException:
            repo.close()
            shutil.rmtree(target if created else repo.dir, ignore_errors=True)
            raise
    finally:
        if transport is None:
            remote.t.close()
    repo.last_transfer = result
    return repo


def remote_remove(repo: Repo, name: str) -> RemoteSpec:
    spec = remotes.remove(repo.dir, name)
    for ref, oid in repo.refs.list(f"refs/remotes/{spec.name}/").items():
        repo.refs.update(ref, None, oid, action="remote-remove", message=spec.url)
    return spec
