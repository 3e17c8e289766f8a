"""The Python API: `Repo` opens a repository and offers one method per user verb."""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from . import graph, metadata
from .checkout import checkout as checkout_files
from .checkout import file_pieces, read_tensor
from .compare import diff_commits
from .config import Config
from .diff import Diff
from .errors import (AlreadyExists, AmbiguousRevision, CkstoreError, MissingObject, NotARepository, ProtectedRef,
                     UnknownRevision, UsageError)
from .formats import scan_path, walk_source
from .formats.statedict import flatten, scan_state, unflatten
from .objects import Commit, Manifest, Tag, is_hex
from .progress import NoProgress, Progress
from .refs import ANY, RefStore, check_ref_name, whoami
from .snapshot import CachedFile, SnapshotSettings, Snapshotter
from .store import Store
from .store.statcache import StatCache

DIRNAME = ".ckstore"
HEADS, TAGS = "refs/heads/", "refs/tags/"


@dataclass(frozen=True)
class CommitInfo:
    """A commit as users see it: hex ids and the metadata."""

    id: str
    commit: Commit
    refs: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.commit, name)

    @property
    def parents(self) -> list[str]:
        return [p.hex() for p in self.commit.parents]

    def to_dict(self) -> dict:
        c = self.commit
        d = {"id": self.id, "parents": self.parents, "manifest": c.manifest.hex(), "message": c.message,
             "author": c.author, "time": c.time, "step": c.step, "metrics": c.metrics, "params": c.params,
             "meta": {"data": c.data, "seeds": c.seeds, "env": c.env, "extra": c.extra}, "refs": list(self.refs)}
        if c.reverted_from:
            d["reverted_from"] = c.reverted_from.hex()
        return d


@dataclass(frozen=True)
class ShowInfo:
    commit: CommitInfo
    manifest: Manifest
    logical_bytes: int
    stored_bytes: int
    new_bytes: int

    def to_dict(self) -> dict:
        return {**self.commit.to_dict(), "logical_bytes": self.logical_bytes, "stored_bytes": self.stored_bytes,
                "new_bytes": self.new_bytes,
                "files": [{"path": f.path, "size": f.size, "hash": f.hash.hex()} for f in self.manifest.files],
                "tensors": [{"name": t.name, "file": t.file, "dtype": t.dtype, "shape": list(t.shape),
                             "nbytes": t.nbytes, "chunks": len(t.chunks), "stats": t.stats}
                            for t in self.manifest.tensors]}


@dataclass
class BranchInfo:
    name: str
    id: str
    current: bool = False
    extra: dict = field(default_factory=dict)


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The directory holding .ckstore: CKSTORE_DIR, else walking up from `start` (default: cwd)."""
    if start is None and os.environ.get("CKSTORE_DIR"):
        start = os.environ["CKSTORE_DIR"]
        if not (Path(start) / DIRNAME).is_dir():
            raise NotARepository(f"CKSTORE_DIR={start} is not a ckstore repository")
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / DIRNAME / "config").is_file():
            return d
    raise NotARepository(f"not a ckstore repository (or any parent up to /): {here}")


class Repo:
    """A ckstore repository. Use as a context manager, or call `close()`."""

    last_transfer: Any = None  # the SyncResult of the latest push/fetch/pull/clone/on-demand fetch

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / DIRNAME
        self.config = Config.load(self.dir / "config")
        self.refs = RefStore(self.dir)
        self.store = Store(self.dir)
        self.stat_cache = StatCache(self.store.index)
        self._pool: ThreadPoolExecutor | None = None
        self._commits: dict[bytes, Commit] = {}

    # -- lifecycle ------------------------------------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | os.PathLike = ".", *, chunk_size: int | None = None,
             required: dict[str, str] | None = None) -> Repo:
        root = Path(path).resolve()
        d = root / DIRNAME
        if (d / "config").exists():
            raise AlreadyExists(f"{d} already exists", hint="open it instead, or remove it to start over")
        schema = metadata.check_schema_spec(required) if required else {}
        config = Config(chunk_size=chunk_size or Config.chunk_size, schema=schema)
        for sub in ("refs/heads", "refs/tags", "objects", "packs", "logs", "locks", "tmp", "cache"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "HEAD").write_text("ref: refs/heads/main\n")
        # The config is written last: a directory without one is not yet a repository.
        tmp = d / "config.tmp"
        tmp.write_text(config.to_json())
        os.replace(tmp, d / "config")
        return cls(root)

    @classmethod
    def open(cls, path: str | os.PathLike | None = None) -> Repo:
        return cls(find_root(path))

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown()
            self._pool = None
        self.store.close()

    def __enter__(self) -> Repo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="ckstore")
        return self._pool

    # -- revisions ------------------------------------------------------------------------------------------------

    def head_branch(self) -> str:
        return self.refs.head().removeprefix(HEADS)

    def _commit(self, oid: bytes) -> Commit:
        commit = self._commits.get(oid)  # immutable, so memoized: a history walk asks for each several times
        if commit is None:
            obj = self.store.get_commit_or_object(oid)
            if not isinstance(obj, Commit):
                raise UnknownRevision(f"{oid.hex()} is a {type(obj).__name__.lower()}, not a commit")
            if len(self._commits) >= 1_000_000:
                self._commits.clear()
            commit = self._commits[oid] = obj
        return commit

    def _peel(self, oid: bytes) -> bytes:
        obj = self.store.get_commit_or_object(oid)
        while isinstance(obj, Tag):
            oid = obj.target
            obj = self.store.get_commit_or_object(oid)
        if not isinstance(obj, Commit):
            raise UnknownRevision(f"{oid.hex()} is a {type(obj).__name__.lower()}, not a commit")
        return oid

    def _parents(self, oid: bytes) -> tuple[bytes, ...]:
        return self._commit(oid).parents

    def _base(self, name: str) -> bytes:
        if name == "HEAD":
            head = self.refs.head()
            oid = self.refs.read(head)
            if oid is None:
                raise UnknownRevision(f"HEAD ({head}) has no commits yet", hint="commit something first")
            return oid
        for ref in (name, HEADS + name, TAGS + name, "refs/remotes/" + name, "refs/" + name):
            if ref.startswith("refs/"):
                try:
                    oid = self.refs.read(ref)
                except UsageError:
                    oid = None
                if oid:
                    return self._peel(oid)
        low = name.lower()
        if is_hex(low) and 4 <= len(low) <= 64:
            return self._by_prefix(low)
        raise UnknownRevision(f"unknown revision {name!r}")

    def _by_prefix(self, prefix: str) -> bytes:
        sub = self.store.objects_dir / prefix[:2]
        found = []
        if sub.is_dir():
            for f in sub.iterdir():
                full = prefix[:2] + f.name
                if len(full) == 64 and full.startswith(prefix) and is_hex(full):
                    oid = bytes.fromhex(full)
                    if isinstance(self.store.get_object(oid), (Commit, Tag)):
                        found.append(oid)
        if not found:
            raise UnknownRevision(f"unknown revision {prefix!r}")
        if len(found) > 1:
            names = ", ".join(sorted(o.hex()[:12] for o in found))
            raise AmbiguousRevision(f"revision {prefix!r} is ambiguous: {names}")
        return self._peel(found[0])

    def resolve(self, rev: str = "HEAD") -> str:
        """The full hex id of the commit a revision names: branch, tag, id or prefix, with ~N and ^N."""
        return self._resolve(rev).hex()

    def _resolve(self, rev: str) -> bytes:
        base, ops = graph.parse_rev(rev.strip())
        return graph.apply_ops(self._base(base), ops, self._parents, rev)

    def _refs_by_commit(self) -> dict[bytes, list[str]]:
        out: dict[bytes, list[str]] = {}
        for name, oid in self.refs.list().items():
            try:
                out.setdefault(self._peel(oid), []).append(name.removeprefix(HEADS).removeprefix("refs/"))
            except CkstoreError:
                continue
        return out

    def info(self, oid: bytes, refs: dict[bytes, list[str]] | None = None) -> CommitInfo:
        return CommitInfo(oid.hex(), self._commit(oid), tuple((refs or {}).get(oid, ())))

    # -- writing --------------------------------------------------------------------------------------------------

    def commit(self, src: str | os.PathLike | dict, message: str = "", *, metrics: dict | None = None,
               params: dict | None = None, meta: dict | None = None, step: int | None = None,
               branch: str | None = None, tag: str | None = None, author: str | None = None,
               capture_env: bool = True, progress: Progress | None = None) -> CommitInfo:
        """Snapshot a file, a directory or an in-memory state dict as a new commit on `branch` (default: HEAD's)."""
        record = metadata.split_sections(metadata.deep_merge(meta or {}, {
            k: v for k, v in (("metrics", metrics), ("params", params), ("step", step)) if v is not None}))
        author = author or whoami()
        metadata.validate_schema(self.config.schema, {**record, "message": message, "author": author})
        ref = HEADS + check_ref_name(branch or self.head_branch())
        tag_ref = TAGS + check_ref_name(tag) if tag else None
        if tag_ref and self.refs.read(tag_ref):
            raise AlreadyExists(f"tag {tag!r} already exists", hint="tags never move; pick another name")
        stats: dict[str, tuple[str, os.stat_result]] = {}
        if isinstance(src, dict):
            tensors, tree = flatten(src)
            sources: list = [scan_state(tensors)]
        else:
            tree, sources = None, []
            for path, rel in walk_source(src):
                st = os.stat(path)  # before reading: a change during the read makes the next stat differ
                hit = self.stat_cache.get(str(path), rel, st, self.config.chunk_size)
                sources.append(CachedFile(*hit) if hit else scan_path(path, rel))
                stats[rel] = (str(path), st)
        with ThreadPoolExecutor(1, thread_name_prefix="ckstore-env") as side:
            # git subprocesses and package lookups (~60 ms) overlap the snapshot instead of preceding it
            env_job = side.submit(metadata.capture_env) if capture_env else None
            tip = self.refs.read(ref) or self.refs.read(self.refs.head())
            mid = self._write_manifest(sources, tree, progress or NoProgress(), self._manifest_of(tip), stats)
            env = env_job.result() if env_job else {}
        with self.refs.locked(ref) as (current, set_ref):
            parent = current if current else self.refs.read(self.refs.head())
            commit = Commit(mid, (parent,) if parent else (), author, time.time(), message, record.get("step"),
                            record["metrics"], record["params"], record["data"], record["seeds"], env,
                            record["extra"])
            oid = self.store.put_object(commit)
            set_ref(oid, "commit", message)
        if tag_ref:
            self.refs.update(tag_ref, oid, None, action="tag", message=message)
        return self.info(oid)

    def _manifest_of(self, commit: bytes | None) -> Manifest | None:
        if commit is None:
            return None
        obj = self.store.get_object(self._commit(commit).manifest)
        return obj if isinstance(obj, Manifest) else None

    def _write_manifest(self, sources: list, tree: Any, progress: Progress, parent: Manifest | None,
                        stats: dict[str, tuple[str, os.stat_result]]) -> bytes:
        writer = self.store.writer(self.config.pack_size)
        progress.begin("commit", sum(f.recipe.size if isinstance(f, CachedFile) else f.size for f in sources))
        settings = SnapshotSettings(self.config.chunk_size, self.config.zstd_level, self.config.max_delta_depth)
        try:
            snap = Snapshotter(self.store, writer, self.pool, settings, progress.advance, parent)
            manifest = snap.manifest(sources, tree)
            writer.finish()
            self.stat_cache.put([(*stats[f.recipe.path], self.config.chunk_size, f.recipe, f.tensors)
                                 for f in snap.fresh if f.recipe.path in stats])
        except BaseException:
            writer.abort()
            raise
        finally:
            progress.end()
        return self.store.put_object(manifest)

    # -- reading --------------------------------------------------------------------------------------------------

    def _walk(self, rev: str | None, all_refs: bool, refs: dict[bytes, list[str]]) -> Iterator[bytes]:
        if all_refs:
            starts = list(refs)
        else:
            try:
                starts = [self._resolve(rev or "HEAD")]
            except UnknownRevision:
                if rev is None:
                    return  # a new repository has no history yet
                raise
        yield from graph.walk(starts, self._parents, lambda oid: self._commit(oid).time)

    def log(self, rev: str | None = None, *, n: int | None = None, all: bool = False,
            where: str | None = None) -> list[CommitInfo]:
        """Commits reachable from `rev` (default HEAD; `all`: every ref), newest first; `where` filters them by a
        metadata query such as ``metrics.val_loss < 0.3 and params.lr >= 1e-4``."""
        match = None
        if where:
            from .query import compile_query
            match = compile_query(where)
        refs = self._refs_by_commit()
        out: list[CommitInfo] = []
        for oid in self._walk(rev, all, refs):
            if n is not None and len(out) >= n:
                break
            info = self.info(oid, refs)
            if match is None or match(info.to_dict()):
                out.append(info)
        self.store.flush_commit_cache()
        return out

    def find(self, expr: str, *, rev: str | None = None, sort: str | None = None,
             limit: int | None = None) -> list[CommitInfo]:
        """Commits matching `expr` (all refs, or what `rev` reaches); `sort` is a key, "-key" for descending."""
        found = self.log(rev, all=rev is None, where=expr)
        if sort:
            from .query import sort_key
            key = sort_key(sort)  # "-key" sorts descending; missing values last either way
            found.sort(key=lambda e: key(e.to_dict()))
        return found[:limit] if limit is not None else found

    def best(self, metric: str, *, mode: str = "min", rev: str = "HEAD") -> CommitInfo | None:
        """The ancestor of `rev` (itself included) with the lowest (`min`) or highest (`max`) finite metric."""
        if mode not in ("min", "max"):
            raise UsageError(f"mode must be 'min' or 'max', not {mode!r}")
        scored = [(e.metrics[metric], e) for e in self.log(rev)
                  if isinstance(e.metrics.get(metric), (int, float)) and math.isfinite(e.metrics[metric])]
        if not scored:
            return None
        pick = min if mode == "min" else max
        return pick(scored, key=lambda pair: pair[0])[1]

    def lineage(self, rev: str = "HEAD") -> list[CommitInfo]:
        """The first-parent chain from `rev` back to the root: how this checkpoint came to be."""
        refs = self._refs_by_commit()
        oid: bytes | None = self._resolve(rev)
        out = []
        while oid is not None:
            out.append(self.info(oid, refs))
            parents = self._commit(oid).parents
            oid = parents[0] if parents else None
        self.store.flush_commit_cache()
        return out

    def manifest(self, rev: str = "HEAD") -> Manifest:
        obj = self.store.get_object(self._commit(self._resolve(rev)).manifest)
        if not isinstance(obj, Manifest):
            raise MissingObject("manifest", self._commit(self._resolve(rev)).manifest.hex())
        return obj

    def show(self, rev: str = "HEAD") -> ShowInfo:
        oid = self._resolve(rev)
        info = self.info(oid, self._refs_by_commit())
        manifest = self.manifest(oid.hex())
        mine = manifest.chunk_ids()
        locs = self.store.index.get_many(list(mine))
        stored = sum(loc.length for loc in locs.values())
        parent_chunks: set[bytes] = set()
        for p in info.commit.parents:
            parent_chunks |= self.manifest(p.hex()).chunk_ids()
        new = sum(loc.length for c, loc in locs.items() if c not in parent_chunks)
        return ShowInfo(info, manifest, manifest.logical_bytes(), stored, new)

    def ls(self, rev: str = "HEAD") -> list[dict]:
        return [{"path": f.path, "size": f.size, "hash": f.hash.hex()} for f in self.manifest(rev).files]

    def cat(self, rev: str, path: str) -> Iterator[memoryview]:
        manifest = self.manifest(rev)
        recipe = manifest.file(path)
        if recipe is None:
            raise UnknownRevision(f"{path!r} is not in {rev}", hint=f"see `ckstore ls {rev}`")
        self._ensure_chunks(manifest, files=[recipe])
        return file_pieces(self.store, manifest, recipe, self.pool)

    def checkout(self, rev: str, dest: str | os.PathLike, *, include: list[str] | None = None, force: bool = False,
                 progress: Progress | None = None) -> list[str]:
        """Write the files of `rev` under `dest`, byte-identical to what was committed."""
        manifest = self.manifest(rev)
        progress = progress or NoProgress()
        self._ensure_chunks(manifest, include=include, progress=progress)
        progress.begin("checkout", sum(f.size for f in manifest.files))
        try:
            files = checkout_files(self.store, manifest, Path(dest), self.pool, include=include, force=force,
                                   progress=progress.advance)
        finally:
            progress.end()
        return [f.path for f in files]

    def load(self, rev: str = "HEAD", names: list[str] | None = None, framework: str = "numpy") -> dict:
        """Tensors of `rev` as arrays. A committed state dict comes back with its nesting; files give a flat dict
        keyed by tensor name (qualified as "file:name" where two files share a name)."""
        if framework not in ("numpy", "torch"):
            raise UsageError(f"framework must be 'numpy' or 'torch', not {framework!r}")
        manifest = self.manifest(rev)
        by_name = {t.name: t for t in manifest.tensors}
        convert = _to_torch if framework == "torch" else (lambda a: a)
        if manifest.tree is not None and names is None:
            self._ensure_chunks(manifest, tensors=list(manifest.tensors))
            return unflatten(manifest.tree, lambda name, kind: convert(read_tensor(self.store, by_name[name],
                                                                                      self.pool)))
        counts: dict[str, int] = {}
        for t in manifest.tensors:
            counts[t.name] = counts.get(t.name, 0) + 1
        keyed = {(t.name if counts[t.name] == 1 else f"{t.file}:{t.name}"): t for t in manifest.tensors}
        if names is not None:
            missing = [n for n in names if n not in keyed]
            if missing:
                raise UsageError(f"no tensor named {missing[0]!r} in {rev}", hint="see `ckstore show` for the names")
            keyed = {n: keyed[n] for n in names}
        self._ensure_chunks(manifest, tensors=list(keyed.values()))
        return {k: convert(read_tensor(self.store, t, self.pool)) for k, t in keyed.items()}

    def diff(self, a: str, b: str | None = None, *, tensors: list[str] | None = None, atol: float = 0.0,
             rtol: float = 0.0) -> Diff:
        """What changed from `a` to `b`; with `b` omitted, what `a` changed over its first parent. "A..B" works."""
        if b is None and ".." in a:
            a, b = a.split("..", 1)
        if b is None:
            new_id = self._resolve(a)
            parents = self._commit(new_id).parents
            old_id = parents[0] if parents else None
        else:
            old_id, new_id = self._resolve(a), self._resolve(b)
        old = self._commit(old_id) if old_id else None
        new = self._commit(new_id)
        return diff_commits(self.store, self.pool, old_id, old, self._manifest_of(old_id), new_id, new,
                            self._manifest_of(new_id), tensors=tensors, atol=atol, rtol=rtol)

    def revert(self, rev: str, reason: str, *, branch: str | None = None) -> CommitInfo:
        """A new commit on `branch` whose checkpoint is `rev`'s, recording why; history is kept, not rewritten."""
        if not reason.strip():
            raise UsageError("a revert needs a reason", hint="pass --reason TEXT")
        target_id = self._resolve(rev)
        target = self._commit(target_id)
        ref = HEADS + check_ref_name(branch or self.head_branch())
        with self.refs.locked(ref) as (current, set_ref):
            if current is None:
                raise UnknownRevision(f"branch {ref.removeprefix(HEADS)!r} has no commits to revert")
            extra = {**target.extra, "revert_reason": reason}
            commit = Commit(target.manifest, (current,), whoami(), time.time(),
                            f"Revert to {target_id.hex()[:12]}: {reason}", target.step, target.metrics,
                            target.params, target.data, target.seeds, target.env, extra, reverted_from=target_id)
            oid = self.store.put_object(commit)
            set_ref(oid, "revert", f"to {target_id.hex()}: {reason}")
        return self.info(oid)

    def reset(self, branch: str, rev: str, reason: str, *, force: bool = False) -> tuple[str | None, str]:
        """Move `branch` to `rev`. Commits that would leave the branch need `force`; tags never move."""
        if not reason.strip():
            raise UsageError("a reset needs a reason", hint="pass --reason TEXT")
        ref = HEADS + check_ref_name(branch)
        if self.refs.read(ref) is None:
            if self.refs.read(TAGS + branch):
                raise ProtectedRef(f"{branch!r} is a tag, and tags never move")
            raise UnknownRevision(f"no branch named {branch!r}")
        target = self._resolve(rev)
        with self.refs.locked(ref) as (current, set_ref):
            if current and not force and not graph.is_ancestor(current, target, self._parents):
                lost = len(graph.ancestors(current, self._parents) - graph.ancestors(target, self._parents))
                raise ProtectedRef(f"resetting {branch} to {rev} would drop {lost} commit(s) from the branch",
                                   hint="pass --force if that is what you want (the audit log keeps the old tip)")
            set_ref(target, "reset", reason)
        return (current.hex() if current else None), target.hex()

    # -- refs -----------------------------------------------------------------------------------------------------

    def branches(self) -> list[BranchInfo]:
        head = self.refs.head()
        return [BranchInfo(n.removeprefix(HEADS), oid.hex(), n == head) for n, oid in self.refs.list(HEADS).items()]

    def branch(self, name: str, rev: str = "HEAD", *, force: bool = False) -> BranchInfo:
        ref = HEADS + check_ref_name(name)
        oid = self._resolve(rev)
        if not force and self.refs.read(ref) is not None:
            raise AlreadyExists(f"branch {name!r} already exists", hint="pass --force to move it")
        self.refs.update(ref, oid, ANY if force else None, action="branch", message=f"from {rev}")
        return BranchInfo(name, oid.hex())

    def delete_branch(self, name: str) -> None:
        ref = HEADS + check_ref_name(name)
        if ref == self.refs.head():
            raise ProtectedRef(f"cannot delete the current branch {name!r}", hint="switch to another branch first")
        old = self.refs.read(ref)
        if old is None:
            raise UnknownRevision(f"no branch named {name!r}")
        self.refs.update(ref, None, old, action="branch-delete")

    def switch(self, name: str) -> None:
        """Make `name` the branch new commits go to by default (HEAD)."""
        ref = HEADS + check_ref_name(name)
        if self.refs.read(ref) is None and self.refs.list(HEADS):
            raise UnknownRevision(f"no branch named {name!r}", hint=f"create it with `ckstore branch {name}`")
        self.refs.set_head(ref)

    def tags(self) -> list[dict]:
        out = []
        for n, oid in self.refs.list(TAGS).items():
            obj = self.store.get_object(oid)
            out.append({"name": n.removeprefix(TAGS), "id": self._peel(oid).hex(),
                        "message": obj.message if isinstance(obj, Tag) else ""})
        return out

    def tag(self, name: str, rev: str = "HEAD", *, message: str | None = None) -> str:
        ref = TAGS + check_ref_name(name)
        oid = self._resolve(rev)
        if self.refs.read(ref):
            raise AlreadyExists(f"tag {name!r} already exists", hint="tags never move; delete it first with -d")
        target = oid
        if message:
            target = self.store.put_object(Tag(oid, name, whoami(), time.time(), message))
        self.refs.update(ref, target, None, action="tag", message=message or "")
        return oid.hex()

    def delete_tag(self, name: str) -> None:
        ref = TAGS + check_ref_name(name)
        old = self.refs.read(ref)
        if old is None:
            raise UnknownRevision(f"no tag named {name!r}")
        self.refs.update(ref, None, old, action="tag-delete")

    def audit(self) -> list[dict]:
        return [e.body() | {"hash": e.hash} for e in self.refs.audit.entries()]

    # -- remotes (see remote/sync.py, push.py, fetch.py) -------------------------------------------------------------

    def remote_add(self, name: str, url: str, *, endpoint_url: str | None = None, region: str | None = None) -> Any:
        from .remote import remotes
        return remotes.add(self.dir, name, url, endpoint_url=endpoint_url, region=region)

    def remote_remove(self, name: str) -> Any:
        from .remote.sync import remote_remove
        return remote_remove(self, name)

    def remote_list(self) -> list:
        from .remote import remotes
        return list(remotes.load(self.dir).values())

    def push(self, remote: str | None = None, branches: list[str] | None = None, *, all: bool = False,
             tags: bool = False, force: bool = False, progress: Progress | None = None) -> Any:
        """Upload branches (default: HEAD's) and, with `tags`, tags; non-fast-forwards need `force`."""
        from .remote.sync import push
        self.last_transfer = push(self, remote, branches, all=all, tags=tags, force=force, progress=progress)
        return self.last_transfer

    def fetch(self, remote: str | None = None, *, progress: Progress | None = None) -> Any:
        """Download the remote's new history; moves refs/remotes/<remote>/*."""
        from .remote.sync import fetch
        self.last_transfer = fetch(self, remote, progress=progress)
        return self.last_transfer

    def pull(self, remote: str | None = None, branch: str | None = None, *, force: bool = False,
             progress: Progress | None = None) -> Any:
        """Fetch, then fast-forward `branch` (default: HEAD's) to the remote's; `force` resets it (audited)."""
        from .remote.sync import pull
        self.last_transfer = pull(self, remote, branch, force=force, progress=progress)
        return self.last_transfer

    def _ensure_chunks(self, manifest: Manifest, **selection: Any) -> None:
        """Partial clones: fetch the chunks the selected files/tensors need and lack here, in one batch."""
        from .remote.sync import ensure_chunks
        result = ensure_chunks(self, manifest, **selection)
        if result is not None:
            self.last_transfer = result

    # -- integrity ------------------------------------------------------------------------------------------------

    def fsck(self, *, read_data: bool = False, reindex: bool = False, progress: Progress | None = None) -> Any:
        from .fsck import check
        if reindex:
            self.store.reindex()
        return check(self, read_data=read_data, progress=progress or NoProgress())


def _to_torch(arr: Any) -> Any:
    import torch  # only when the caller asked for torch tensors
    import numpy as np
    special = {"bfloat16": (np.int16, torch.bfloat16), "float8_e4m3fn": (np.uint8, torch.float8_e4m3fn),
               "float8_e5m2": (np.uint8, torch.float8_e5m2), "float8_e8m0fnu": (np.uint8, torch.float8_e8m0fnu)}
    if arr.dtype.name in special:
        raw, target = special[arr.dtype.name]
        return torch.from_numpy(np.ascontiguousarray(arr).view(raw)).view(target)
    return torch.from_numpy(np.ascontiguousarray(arr))


def clone(url: str, dest: str | os.PathLike | None = None, **options: Any) -> Repo:
    """Clone a remote into a new repository at `dest` (default: named after the URL); options: filter,
    metadata_only, endpoint_url, region, name, progress. `repo.last_transfer` says what moved."""
    from .remote.sync import clone as clone_remote
    return clone_remote(url, dest, **options)
