"""Pull (fetch, then fast-forward a branch) and clone (a new repository from a remote)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..engine import history
from ..engine.prefill import Prefill
from ..engine.repository import CLONING, DIRNAME, Repository, clone_marker
from ..errors import AlreadyExists, NonFastForward, UnknownRevision, UsageError
from ..fs.fileio import fsync_dir, write_atomic
from ..model import graph
from ..model.crypto import PLAIN, Sealed
from ..model.objects import Manifest
from ..model.progress import NoProgress, Progress
from ..model.refnames import HEADS, REMOTES, check_ref_name, remote_ref
from ..results import SyncResult
from ..storage import remotes
from ..storage.config import DEFAULT_CHUNK
from ..storage.keys import Passphrase
from ..storage.remotes import RemoteSpec
from ..transport.base import Transport
from .fetch import clone_head, fetch_with
from .on_demand import OnDemand
from .select import parse_filter
from .remote_refs import remote_keyring
from .session import Session, check_same_keys, open_spec, remote_config


def pull(repo: Repository, remote_name: str | None = None, branch: str | None = None, *, force: bool = False,
         merge: bool = False, progress: Progress | None = None, transport: Transport | None = None) -> SyncResult:
    """Fetch, then fast-forward the local branch to the remote's (`force`: reset it; audited; `merge`: join a
    diverged branch with a two-parent commit holding our checkpoint, so it can be pushed)."""
    spec = remotes.get(repo.dir, remote_name)
    remote = Session(transport or open_spec(spec, create=False), spec.name, repo.store.scheme)
    try:
        result, _ = fetch_with(repo, spec, remote, progress or NoProgress(), action="pull")
    finally:
        if transport is None:
            remote.t.close()
    name = check_ref_name(branch or repo.head_branch())
    theirs = repo.refs.read(remote_ref(spec.name, name))
    if theirs is None:
        raise UnknownRevision(f"remote {spec.name} has no branch {name!r}", hint="see `ckstore branch` and the remote")
    ref = HEADS + name
    if merge and not force and graph.ff_status(repo.refs.read(ref), theirs, repo.parents) == "diverged":
        oid, _, status = history.merge(repo, f"{spec.name}/{name}", take="ours", branch=name,
                                       message=f"Merge {spec.name}/{name} into {name}")
        result.refs.append({"ref": ref, "old": None, "new": oid.hex(), "status": status, "forced": False})
        return result
    with repo.refs.locked(ref) as (current, set_ref):
        relation = graph.ff_status(current, theirs, repo.parents)
        status = {"same": "up-to-date", "create": "created", "fast-forward": "updated", "behind": "ahead"}.get(
            relation, "diverged")
        if relation in ("create", "fast-forward"):
            set_ref(theirs, "pull", f"{spec.name}/{name}")
        elif relation == "diverged" and force:
            set_ref(theirs, "pull-force", f"{spec.name}/{name} (was {current.hex()})")
            status = "forced"
        elif relation == "diverged":
            raise NonFastForward(f"{name} and {spec.name}/{name} have diverged: {current.hex()[:12]} is not an "
                                 f"ancestor of {theirs.hex()[:12]}, so pull cannot fast-forward",
                                 hint="pass --merge to join them (a two-parent commit keeping your checkpoint), "
                                      "--force to reset the branch to the remote's (the audit log keeps the old tip)")
    result.refs.append({"ref": ref, "old": current.hex() if current else None, "new": theirs.hex(),
                        "status": status, "forced": status == "forced"})
    return result


def default_clone_dir(url: str) -> str:
    """The directory a clone of `url` goes to when none is given: the URL's last part."""
    path = url.split("://", 1)[-1].rstrip("/")
    name = path.rsplit("/", 1)[-1] or "repo"
    return name.removesuffix(".ckstore") or "repo"


def clone(url: str, dest: str | os.PathLike | None = None, *, filter: str | list[str] | None = None,
          metadata_only: bool = False, depth: int | None = None, name: str = "origin",
          progress: Progress | None = None, checkout: str | os.PathLike | None = None,
          transport: Transport | None = None, passphrase: Passphrase = None,
          **settings: Any) -> tuple[Repository, SyncResult]:
    """A new repository at `dest` holding the remote's history, and what moved (`filter`, `metadata_only`, `depth`:
    a partial clone, see `parse_filter`; the rest of the data comes on demand). A failed clone leaves nothing.
    A killed one leaves `.ckstore/CLONING` (every other command then refuses, naming this one): the same clone
    again finishes it, keeping the packs already sealed; a clone of another URL or filter into it is refused.
    `checkout`: also write the files of the branch the clone checks out there (an empty or new directory),
    verified as `checkout` does, while the data arrives: the newest version is decoded once, not twice.
    An encrypted remote is opened with `passphrase` (else CKSTORE_PASSWORD*, or a prompt function) and the clone
    is encrypted under the same master key, with the remote's key files. `settings`: the remote's transport settings (`remotes.SETTINGS`: endpoint_url, region, profile, allow_http,
    ca_bundle, sse, sse_kms_key_id, token_file), recorded with it."""
    partial = parse_filter(filter, metadata_only, depth)
    if checkout is not None and partial is not None and "tensors" in partial:
        raise UsageError("--checkout needs the whole of the newest commit: not with --filter or --metadata-only",
                         hint="clone, then `ckstore checkout BRANCH -o DIR` (it fetches what is missing)")
    spec = remotes.make_spec(name, url, partial=partial, **settings)
    remote = Session(transport or open_spec(spec, create=False), spec.name, PLAIN)  # sealed once the remote config says so
    prefills: list[Prefill] = []
    out = made = None
    try:
        cfg = remote_config(remote, match_scheme=False)  # before anything is made: a bad URL leaves nothing behind
        keyring, key_files = None, None
        if cfg.get("encryption"):
            keyring, key_files = remote_keyring(remote, cfg, passphrase)
            remote.scheme = Sealed(keyring)
        target = Path(dest if dest is not None else default_clone_dir(spec.url)).resolve()
        out = _checkout_dir(Path(checkout), target) if checkout is not None else None
        made = _first_missing(out) if out is not None else None
        ckdir = target / DIRNAME
        marker = clone_marker(ckdir)
        if marker is None:
            if (ckdir / "config").exists():
                raise AlreadyExists(f"{ckdir} already exists", hint="clone into another directory")
            marker = {"url": spec.url, "dest": str(target), "name": spec.name, "partial": partial,
                      "created": not target.exists()}
            (ckdir / "tmp").mkdir(parents=True, exist_ok=True)
            write_atomic(ckdir / CLONING, json.dumps(marker).encode(), ckdir / "tmp")
        elif (marker.get("url"), marker.get("partial"), marker.get("name")) != (spec.url, partial, spec.name):
            raise AlreadyExists(f"{target} is an incomplete clone of {marker.get('url')} (remote "
                                f"{marker.get('name')}, filter {marker.get('partial')}), not of {spec.url} "
                                f"(remote {spec.name}, filter {partial})",
                                hint=f"run that clone again to finish it, or remove {target} first")
        chunk = cfg.get("chunk_size", DEFAULT_CHUNK)
        required = (cfg.get("schema") or {}).get("required")
        if (ckdir / "config").exists():
            repo = Repository(target, incomplete_ok=True, passphrase=keyring)
        else:
            repo = Repository.create(target, chunk_size=chunk, required=required or None, incomplete_ok=True,
                                     encrypt=keyring, key_files=key_files)
        check_same_keys(cfg, repo.store.scheme, remote.url)
        try:
            if spec.name not in remotes.load(repo.dir):
                remotes.add(repo.dir, name, spec.url, partial=partial, **spec.settings())
            def begin_checkout(manifest: Manifest) -> Prefill:
                prefills.append(Prefill(manifest, out))
                return prefills[-1]

            progress = progress or NoProgress()
            result, fetched = fetch_with(repo, spec, remote, progress, action="clone",
                                         checkout=begin_checkout if out is not None else None)
            for branch, oid in sorted(fetched.heads.items()):
                old = repo.refs.read(HEADS + branch)   # a resumed clone may have made it already
                if old != oid:
                    repo.refs.update(HEADS + branch, oid, old, action="clone", message=spec.url)
                result.refs.append({"ref": HEADS + branch, "old": None, "new": oid.hex(), "status": "created",
                                    "forced": False})
            head = clone_head(fetched.head, fetched.heads)
            if head:
                repo.refs.set_head(HEADS + head)
            if fetched.prefill is not None:
                total = sum(f.size for f in fetched.prefill.manifest.files)
                progress.begin("check out", total)
                try:
                    fetched.prefill.finish(repo.store, repo.pool, progress.advance)
                finally:
                    progress.end()
                result.checked_out = str(out)
            os.unlink(ckdir / CLONING)               # the last step: now it is a repository like any other
            fsync_dir(ckdir)
        except BaseException:
            repo.close()
            shutil.rmtree(target if marker.get("created") else ckdir, ignore_errors=True)
            raise
    except BaseException:
        for prefill in prefills:
            prefill.abort()
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)    # nothing in it but what this clone created
        raise
    finally:
        if transport is None:
            remote.t.close()
    if partial is not None:
        repo.chunk_source = OnDemand(spec)
    return repo, result


def _checkout_dir(out: Path, target: Path) -> Path:
    """Where `clone --checkout` writes: refused before anything is made unless it is new or an empty directory
    outside the repository's own."""
    out = out.resolve()
    if out == target or target / DIRNAME in (out, *out.parents):
        raise UsageError(f"--checkout {out}: not the repository's own directory",
                         hint="check out into another directory (the repository stays beside it)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AlreadyExists(f"{out} is not an empty directory", hint="check out into a new or empty directory")
    return out


def _first_missing(path: Path) -> Path | None:
    """The outermost of `path` and its parents that does not exist (what making `path` creates), or None."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def remote_remove(repo: Repository, name: str) -> RemoteSpec:
    """Forget remote `name` and delete its remote-tracking refs (audited)."""
    spec = remotes.remove(repo.dir, name)
    for ref, oid in repo.refs.list(f"{REMOTES}{spec.name}/").items():
        repo.refs.update(ref, None, oid, action="remote-remove", message=spec.url)
    return spec
