"""`snapshot(repo_or_url, rev)`: a revision's files as a local directory, hard-linked from a per-repository cache.

The cache (`$CKSTORE_CACHE`, default ~/.cache/ckstore) holds, per repository:

    <key>/blobs/<file BLAKE3 hex>           each committed file once, written by a verified checkout, read-only
    <key>/snapshots/<commit>[-<sel>]/PATH   hard links to the blobs (copies where links are impossible)
    <key>/repo/                             for a URL: a metadata-only clone; files' chunks come on demand

A file shared by several revisions is one blob; a snapshot directory appears whole (built aside, then renamed)
and is reused as it is. `<sel>` names an include/exclude selection, so a filtered snapshot never holds more.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..api import Repo, clone
from ..errors import CkstoreError, UsageError
from ..model.objects import FileRecipe, is_hex
from ..model.paths import check_paths

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where snapshots are cached: `cache_dir`, else $CKSTORE_CACHE, else ~/.cache/ckstore."""
    return Path(cache_dir or os.environ.get("CKSTORE_CACHE") or Path.home() / ".cache" / "ckstore")


def snapshot(repo_or_url: Repo | str | os.PathLike, rev: str = "HEAD", *, include: list[str] | None = None,
             exclude: list[str] | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local directory holding the files of `rev` (those matching `include` globs and no `exclude` glob),
    byte-identical to what was committed, for `from_pretrained` and other readers. `repo_or_url`: a Repo, a
    repository's directory, or a remote URL (cloned metadata-only into the cache; only the selected files'
    data is fetched). Files are hard links into the cache: treat the directory as read-only."""
    root = cache_root(cache_dir)
    with _source(repo_or_url, root) as (repo, home, cached):
        commit = _resolve(repo, rev, remote=cached)
        files = _select(repo.manifest(commit).files, include, exclude)
        if (include or exclude) and not files:
            raise UsageError(f"the include/exclude patterns match no file of {rev}",
                             hint="see `ckstore ls " + rev + "`")
        check_paths([f.path for f in files])
        final = home / "snapshots" / (commit + _selection_suffix(include, exclude))
        if final.is_dir():
            return final
        blobs = home / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        _fill_blobs(repo, commit, [f for f in files if not (blobs / f.hash.hex()).is_file()], blobs, home)
        return _link_tree(files, blobs, final)


def _select(files: tuple[FileRecipe, ...], include: list[str] | None,
            exclude: list[str] | None) -> list[FileRecipe]:
    """The same rule as `checkout --include/--exclude` (case-sensitive globs on the committed path)."""
    chosen = [f for f in files if not include or any(fnmatch.fnmatchcase(f.path, g) for g in include)]
    return [f for f in chosen if not exclude or not any(fnmatch.fnmatchcase(f.path, g) for g in exclude)]


def _selection_suffix(include: list[str] | None, exclude: list[str] | None) -> str:
    if not include and not exclude:
        return ""
    spec = repr((sorted(include or []), sorted(exclude or []))).encode()
    return "-" + hashlib.sha256(spec).hexdigest()[:12]


def _key(text: str) -> str:
    tail = _SAFE.sub("_", text.rstrip("/").rsplit("/", 1)[-1])[:40] or "repo"
    return f"{tail}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


@contextmanager
def _source(repo_or_url: Repo | str | os.PathLike, root: Path) -> Iterator[tuple[Repo, Path, bool]]:
    """(repository to read, its cache directory, whether it is a cached clone of a URL); a repository opened or
    cloned here is closed after."""
    if isinstance(repo_or_url, Repo):
        yield repo_or_url, root / _key(str(repo_or_url.root.resolve())), False
        return
    text = os.fspath(repo_or_url)
    local = Path(text)
    if (local / ".ckstore").is_dir():
        with Repo.open(local) as repo:
            yield repo, root / _key(str(repo.root.resolve())), False
        return
    if "://" not in text and not (local / "config").is_file():
        with Repo.open(local) as repo:  # a directory inside a repository: NotARepository otherwise
            yield repo, root / _key(str(repo.root.resolve())), False
        return
    home = root / _key(text if "://" in text else str(local.resolve()))
    where = home / "repo"
    if (where / ".ckstore" / "config").is_file() and not (where / ".ckstore" / "CLONING").exists():
        repo = Repo.open(where)
    else:
        home.mkdir(parents=True, exist_ok=True)
        repo = clone(text, where, metadata_only=True)  # a killed clone resumes here the next time
    with repo:
        yield repo, home, True


def _resolve(repo: Repo, rev: str, *, remote: bool) -> str:
    """The commit id `rev` names; for a cached clone, after fetching, as the remote names it now."""
    if not remote:
        return repo.resolve(rev)
    if is_hex(rev) and len(rev) == 64:
        try:
            return repo.resolve(rev)
        except CkstoreError:
            pass
    try:
        repo.fetch()
    except CkstoreError:
        if rev != "HEAD":
            return repo.resolve(rev)  # offline: what the cache knows
        raise
    for name in ([f"origin/{rev}"] if rev != "HEAD" else [f"origin/{repo.head_branch()}"]) + [rev]:
        try:
            return repo.resolve(name)
        except CkstoreError:
            continue
    return repo.resolve(rev)


def _escape(path: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", path)


def _fill_blobs(repo: Repo, commit: str, missing: list[FileRecipe], blobs: Path, home: Path) -> None:
    """Check out the files whose blobs are missing (verified, byte for byte) and move each into blobs/."""
    if not missing:
        return
    tmp = home / "tmp" / uuid.uuid4().hex
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        repo.checkout(commit, tmp, include=[_escape(f.path) for f in missing])
        for f in missing:
            src = tmp / f.path
            os.chmod(src, 0o444)  # shared by every snapshot linking it: keep writers away
            os.replace(src, blobs / f.hash.hex())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _link_tree(files: list[FileRecipe], blobs: Path, final: Path) -> Path:
    """Build the snapshot directory aside, then rename it into place (a concurrent twin wins harmlessly)."""
    build = final.parent / f".tmp-{uuid.uuid4().hex}"
    build.mkdir(parents=True)
    try:
        for f in files:
            dest = build / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(blobs / f.hash.hex(), dest)
            except OSError:  # no hard links here (another filesystem, some network shares): copy
                shutil.copyfile(blobs / f.hash.hex(), dest)
        try:
            os.rename(build, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)
    return final
