"""`migrate --encrypt`: a plain repository rewritten, in place, as an encrypted one.

Ids are keyed in an encrypted repository, so every chunk and object gets a new id and every reference to one is
rewritten: frames are re-encoded as they were stored (a delta stays a delta, against its base's new id), objects
are rebuilt bottom-up (manifests, then commits parents first, then tags, notes and alias moves), refs and
records follow. The new repository is built beside the old one (`.ckstore-migrate/.ckstore`) under gc's locks (no
writer runs meanwhile), verified as every write is, and only then swapped in:
  1. `.ckstore-migrate/READY` is written (fsync'd) once the new repository is complete;
  2. `.ckstore` is renamed to `.ckstore-plain`, and `.ckstore-migrate/.ckstore` to `.ckstore`;
  3. `.ckstore-plain` is deleted (kept with `keep_plain`).
A crash before 1 leaves the old repository as it was (the next migrate starts over); between 1 and the second
rename of 2, `finish_migration` (run by every command that looks for a repository) completes the swap.
Ids that name nothing here (a parent dropped by retention) are mapped by a keyed hash of the old id, the same
everywhere, so history through them still reads "dropped".
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..fs.fileio import write_atomic
from ..model import codec
from ..model.objects import AliasMove, ChunkRun, Commit, Manifest, Note, Tag
from ..model.progress import NoProgress, Progress
from ..storage.config import NEW_FEATURES
from ..storage.keys import Passphrase
from ..storage.refs import ANY
from .repository import Repository
from .swap import PLAIN_COPY, READY, WORK, finish_migration


@dataclass
class MigrateResult:
    """What `migrate --encrypt` rewrote."""

    chunks: int = 0
    objects: int = 0
    refs: int = 0
    stored_before: int = 0
    stored_after: int = 0
    kept_plain: str | None = None


def _size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file() and "cache" not in p.relative_to(d).parts)


class _Rewrite:
    """The id map of one migration, and the objects rebuilt through it."""

    def __init__(self, src: Repository, dst: Repository) -> None:
        self.src, self.dst = src, dst
        self.ids: dict[bytes, bytes] = {}

    def new(self, old: bytes | None) -> bytes | None:
        if old is None:
            return None
        if old not in self.ids:                 # names nothing here (dropped by retention): a stable stand-in
            self.ids[old] = self.dst.store.scheme.object_id(b"ckstore migrated id\0" + old)
        return self.ids[old]

    def chunks(self, progress: Progress) -> int:
        """Every chunk, bases before the deltas on them, re-encoded as stored and sealed under the new ids."""
        src = self.src.store
        chunks = [k for k, _ in src.index.items("chunks")]
        base_of = {}
        for c in chunks:
            loc = src.index.get(c)
            base_of[c] = src.frame_base(loc, c) if loc is not None else None
        order: list[bytes] = []
        placed: set[bytes] = set()
        for c in chunks:
            chain = []
            while c is not None and c not in placed and len(chain) <= 64:
                chain.append(c)
                placed.add(c)
                c = base_of.get(c) if base_of.get(c) in base_of else None
            order += reversed(chain)
        sink = self.dst.store.sink(self.dst.config.pack_size)
        level = self.dst.config.zstd_level
        progress.begin("migrate: chunks", len(order))
        try:
            for c in order:
                loc = src.index.get(c)
                raw = src.get_chunk(c, keep=False)
                frame = src.open_frame(c, src.read_frame(loc))
                width = codec.HEADER.unpack_from(frame)[2]
                b = base_of.get(c)
                scheme = self.dst.store.scheme
                new = scheme.chunk_id(raw)
                if b is not None and b in self.ids:
                    encoded = codec.encode(raw, width, level, base=src.get_chunk(b, keep=True), base_id=self.ids[b])
                else:
                    encoded = codec.encode(raw, width, level)
                sink.add(new, scheme.seal_frame(new, encoded), len(raw))
                self.ids[c] = new
                progress.advance(1)
            sink.finish()
        except BaseException:
            sink.abort()
            raise
        finally:
            progress.end()
        return len(order)

    def rebuilt(self, obj):
        """`obj` with every id it names mapped."""
        m = self.new
        if isinstance(obj, Manifest):
            tensors = tuple(dataclasses.replace(t, chunks=tuple(m(c) for c in t.chunks)) for t in obj.tensors)
            files = tuple(dataclasses.replace(f, segments=tuple(
                dataclasses.replace(s, chunks=tuple(m(c) for c in s.chunks)) if isinstance(s, ChunkRun) else s
                for s in f.segments)) for f in obj.files)
            return dataclasses.replace(obj, tensors=tensors, files=files)
        if isinstance(obj, Commit):
            return dataclasses.replace(obj, manifest=m(obj.manifest), parents=tuple(m(p) for p in obj.parents),
                                       reverted_from=m(obj.reverted_from))
        if isinstance(obj, Tag):
            return dataclasses.replace(obj, target=m(obj.target))
        if isinstance(obj, Note):
            return dataclasses.replace(obj, target=m(obj.target), parents=tuple(m(p) for p in obj.parents))
        if isinstance(obj, AliasMove):
            return dataclasses.replace(obj, target=m(obj.target), previous=m(obj.previous))
        raise UsageError(f"cannot migrate an object of type {type(obj).__name__}")

    def objects(self, progress: Progress) -> int:
        """Every object, what it names first, rebuilt and written under its new id."""
        src = self.src.store
        objs = {oid: src.get_object(oid) for oid in src.object_ids()}

        def deps(obj) -> list[bytes]:
            if isinstance(obj, Commit):
                return [obj.manifest, *obj.parents, *([obj.reverted_from] if obj.reverted_from else [])]
            if isinstance(obj, (Tag, Note, AliasMove)):
                out = [getattr(obj, "target", None), getattr(obj, "previous", None), *getattr(obj, "parents", ())]
                return [x for x in out if x is not None]
            return []
        progress.begin("migrate: objects", len(objs))
        try:
            for root in objs:
                stack = [(root, False)]
                while stack:                          # iterative post-order: histories are deep
                    oid, expanded = stack.pop()
                    if oid in self.ids or oid not in objs:
                        continue
                    if expanded:
                        self.ids[oid] = self.dst.store.put_object(self.rebuilt(objs[oid]))
                        progress.advance(1)
                        continue
                    stack.append((oid, True))
                    stack.extend((d, False) for d in deps(objs[oid]) if d not in self.ids)
        finally:
            progress.end()
        return len(objs)


def migrate_encrypt(src: Repository, passphrase: Passphrase, *, keep_plain: bool = False, wait: float = 60.0,
                    progress: Progress | None = None) -> tuple[MigrateResult, Path]:
    """Rewrite the plain repository `src` as an encrypted one in place (see the module docstring); the result and
    the root to open it from (with the same passphrase). `src` is closed."""
    if src.store.scheme.encrypted:
        raise UsageError(f"repository {src.root} is encrypted already",
                         hint="`ckstore key passwd` changes its passphrase")
    progress = progress or NoProgress()
    root, work = src.root, src.root / WORK
    result = MigrateResult(stored_before=_size(src.dir))
    with src.leases.gc(), src.leases.sweep(wait):
        shutil.rmtree(work, ignore_errors=True)         # what a killed migrate left (no READY: never swapped in)
        dst = Repository.create(work, chunk_size=src.config.chunk_size, encrypt=passphrase)
        try:
            config = dataclasses.replace(src.config, encryption=dst.config.encryption, features=NEW_FEATURES)
            config.save(dst.dir / "config", dst.dir / "tmp")
            dst.config = config
            rw = _Rewrite(src, dst)
            result.chunks = rw.chunks(progress)
            result.objects = rw.objects(progress)
            for sub in ("dropped", "archived"):             # records are named by commit id
                for f in sorted((src.dir / sub).glob("*")) if (src.dir / sub).is_dir() else ():
                    if len(f.name) == 64:
                        new = rw.new(bytes.fromhex(f.name))
                        write_atomic(dst.dir / sub / new.hex(), f.read_bytes(), dst.dir / "tmp")
            for f in ("remotes.json", "logs/audit"):
                if (src.dir / f).is_file():
                    write_atomic(dst.dir / f, (src.dir / f).read_bytes(), dst.dir / "tmp")
            dst.refs.set_head(src.refs.head())
            for name, oid in src.refs.list().items():
                if oid not in rw.ids:           # names nothing stored here (a partial clone's remote ref)
                    continue
                dst.refs.update(name, rw.ids[oid], ANY, action="migrate", message="encrypted: ids re-keyed")
                result.refs += 1
        finally:
            dst.close()
        result.stored_after = _size(dst.dir)
        write_atomic(work / READY, b"ready\n", dst.dir / "tmp")
        src.close()
        os.rename(src.dir, root / PLAIN_COPY)
        finish_migration(root)
    if keep_plain:
        result.kept_plain = str(root / PLAIN_COPY)
    else:
        shutil.rmtree(root / PLAIN_COPY)
    return result, root


def upgrade(repo: Repository) -> tuple[int, int]:
    """Raise the repository's format version to the newest this build writes, in place: (version before, after).
    Every object an older version wrote reads the same under the newer one, so only the config changes, in one
    atomic rename (a crash leaves the old config or the new one); the features only add ways of writing."""
    before = repo.config.version
    missing = tuple(f for f in NEW_FEATURES if not repo.config.uses(f))
    if missing:
        cfg = dataclasses.replace(repo.config, features=repo.config.features + missing)
        repo.config = cfg.save(repo.dir / "config", repo.dir / "tmp")
    return before, repo.config.version
