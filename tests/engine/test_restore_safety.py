"""Checkout safety: the whole-file BLAKE3 is checked before a file gets its final name (and by `cat`), and checkout
writes only through directory descriptors, so a destination whose components are swapped for symlinks while it
runs (T15) never has anything created outside it.

The default tier runs 20 race rounds per swap kind; the `soak` variant (CKSTORE_SOAK=1) runs 200.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckstore import Repo
from ckstore.engine import restore
from ckstore.errors import CkstoreError, CorruptObject, UnsafePath
from ckstore.model.objects import ChunkRun, Commit, Manifest, hash_bytes

from conftest import SOAK, soak, skip_unless_soak  # noqa: F401
MAIN = "refs/heads/main"
CHUNK = 4096


def files_under(root: Path) -> dict[str, bytes]:
    """Every regular file below root (symlinks are not followed), by relative path."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink():
                out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def temps_under(root: Path) -> list[str]:
    return [k for k in files_under(root) if ".ckstore-tmp-" in k] if root.exists() else []


def replant(repo: Repo, manifest: Manifest, message: str) -> str:
    """Move main to a new commit of `manifest` (a hostile manifest: correct chunks, a lying recipe)."""
    mid = repo.engine.store.put_object(manifest)
    head = repo.engine.refs.read(MAIN)
    cid = repo.engine.store.put_object(Commit(mid, (head,), "mallory", time.time(), message))
    repo.engine.refs.update(MAIN, cid, head, action="commit", message=message)
    return cid.hex()


def with_recipe(manifest: Manifest, path: str, **changes) -> Manifest:
    files = tuple(dataclasses.replace(f, **changes) if f.path == path else f for f in manifest.files)
    return dataclasses.replace(manifest, files=files)


# -- whole-file BLAKE3 ----------------------------------------------------------------------------------------------


@pytest.fixture
def hashed(tmp_path: Path):
    """A repository with one good commit of a safetensors file, an opaque multi-chunk file and a small config."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(7)
    save_file({"w": rng.standard_normal((64, 256), dtype=np.float32),
               "b": rng.standard_normal((256,), dtype=np.float32)}, str(src / "model.safetensors"))
    (src / "sub" / "blob.bin").write_bytes(rng.integers(0, 256, 400_000, dtype=np.uint8).tobytes())
    (src / "config.json").write_text('{"d": 256}\n')
    repo = Repo.init(tmp_path / "repo", chunk_size=CHUNK)
    good = repo.commit(src, "good", capture_env=False).id
    yield repo, src, good
    repo.close()


@pytest.mark.parametrize("path", ["model.safetensors", "sub/blob.bin", "config.json"])
def test_wrong_file_hash_never_gets_its_final_name(hashed, tmp_path: Path, path: str) -> None:
    """A manifest whose chunks are intact but whose recipe hash is wrong: CorruptObject naming the file, no file
    and no temporary file left, and the other files and commits still check out."""
    repo, src, good = hashed
    manifest = repo.manifest(good)
    real = manifest.file(path).hash
    wrong = bytes([real[0] ^ 1]) + real[1:]
    bad = replant(repo, with_recipe(manifest, path, hash=wrong), "wrong hash")
    dest = tmp_path / "dest"
    with pytest.raises(CorruptObject, match=path) as info:
        repo.checkout(bad, dest)
    assert (info.value.what, info.value.expected, info.value.got) == ("file", wrong.hex(), real.hex())
    assert files_under(dest) == {}  # neither the bad file, nor the good ones of the same checkout, nor temps
    others = [f.path for f in manifest.files if f.path != path]
    assert repo.checkout(bad, tmp_path / "others", include=others) == others
    assert files_under(tmp_path / "others") == {p: (src / p).read_bytes() for p in others}
    repo.checkout(good, tmp_path / "good")
    assert files_under(tmp_path / "good") == files_under(src)


def test_chunk_placed_at_the_wrong_length_is_refused(hashed, tmp_path: Path) -> None:
    """The last two chunks of an opaque run swapped (chunks of other lengths than the run records there) with the
    recipe hash of the swapped bytes: every chunk verifies, the total length matches, but the bytes would land at
    other offsets than hashed. Refused before any final name."""
    repo, _, good = hashed
    manifest = repo.manifest(good)
    recipe = manifest.file("sub/blob.bin")
    (run,) = recipe.segments
    assert isinstance(run, ChunkRun) and len(run.chunks) > 2 and run.lengths[-1] != run.lengths[-2]
    chunks = run.chunks[:-2] + (run.chunks[-1], run.chunks[-2])
    data = b"".join(bytes(repo.engine.store.get_chunk(c)) for c in chunks)
    lying = with_recipe(manifest, recipe.path, hash=hash_bytes(data), segments=(ChunkRun(run.nbytes, 0, chunks,
                                                                                          run.lengths),))
    bad = replant(repo, lying, "misplaced chunk")
    with pytest.raises(CorruptObject, match="sub/blob.bin"):
        repo.checkout(bad, tmp_path / "dest")
    assert files_under(tmp_path / "dest") == {}


def test_cat_small_file_with_wrong_hash_yields_nothing(hashed) -> None:
    repo, _, good = hashed
    manifest = repo.manifest(good)
    real = manifest.file("sub/blob.bin").hash
    bad = replant(repo, with_recipe(manifest, "sub/blob.bin", hash=bytes(32)), "wrong hash")
    pieces = repo.cat(bad, "sub/blob.bin")
    with pytest.raises(CorruptObject, match="sub/blob.bin") as info:
        next(iter(pieces))
    assert info.value.got == real.hex()
    assert b"".join(repo.cat(bad, "config.json")) == b'{"d": 256}\n'  # the other files of that commit read fine


def test_cat_large_file_with_wrong_hash_fails_after_the_last_piece(hashed, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above CAT_BUFFER the bytes are streamed: every piece comes out, then CorruptObject."""
    repo, src, good = hashed
    monkeypatch.setattr(restore, "CAT_BUFFER", 1000)
    manifest = repo.manifest(good)
    bad = replant(repo, with_recipe(manifest, "sub/blob.bin", hash=bytes(32)), "wrong hash")
    got = []
    with pytest.raises(CorruptObject, match="sub/blob.bin"):
        for piece in repo.cat(bad, "sub/blob.bin"):
            got.append(bytes(piece))
    assert b"".join(got) == (src / "sub" / "blob.bin").read_bytes()
    assert b"".join(repo.cat(good, "sub/blob.bin")) == (src / "sub" / "blob.bin").read_bytes()


def test_cat_good_files_round_trip(hashed) -> None:
    repo, src, good = hashed
    for path, data in files_under(src).items():
        assert b"".join(repo.cat(good, path)) == data


# -- T15: destination races -----------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
AT_FDCWD, RENAME_EXCHANGE = -100, 2


def exchange(a: Path, b: Path) -> None:
    """Atomically swap two names (renameat2 RENAME_EXCHANGE): the directory and the symlink trade places."""
    if _renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def can_exchange(tmp: Path) -> bool:
    if _renameat2 is None:
        return False
    probe = tmp / "probe"
    (probe / "d").mkdir(parents=True)
    (probe / "l").symlink_to(tmp, target_is_directory=True)
    try:
        exchange(probe / "d", probe / "l")
        return (probe / "d").is_symlink()
    except OSError:
        return False


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory):
    """A commit of 300 files: 100 at the top, 200 below `sub/` (some nested), a few of them multi-chunk."""
    d = tmp_path_factory.mktemp("race")
    src = d / "src"
    rng = np.random.default_rng(15)
    for i in range(300):
        rel = f"f{i:03d}.bin" if i < 100 else (f"sub/g{i:03d}.bin" if i < 200 else f"sub/d{i % 4}/h{i:03d}.bin")
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        n = 20_000 if i % 50 else 200_000
        p.write_bytes(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    repo = Repo.init(d / "repo", chunk_size=1 << 16)
    cid = repo.commit(src, "many", capture_env=False).id
    yield repo, cid, files_under(src), d
    repo.close()


class Swapper(threading.Thread):
    """Swaps `dest/sub` between the real directory and a symlink to `outside`, as fast as it can."""

    def __init__(self, dest: Path, kind: str) -> None:
        super().__init__(daemon=True)
        self.dest, self.kind, self.stop, self.swaps = dest, kind, threading.Event(), 0

    def run(self) -> None:
        sub, lnk, aside = self.dest / "sub", self.dest / "lnk", self.dest / "sub.aside"
        while not self.stop.is_set():
            try:
                if self.kind == "exchange":
                    exchange(sub, lnk)
                else:  # two renames each way: between them `sub` is missing, then a symlink
                    os.rename(sub, aside)
                    os.rename(lnk, sub)
                    os.rename(sub, lnk)
                    os.rename(aside, sub)
                self.swaps += 1
            except OSError:
                pass  # the checkout made or moved something meanwhile: keep going
            time.sleep(0)

    def restore_layout(self) -> None:
        """Leave the real directory at `sub` (exchange) once the thread has stopped."""
        sub, lnk = self.dest / "sub", self.dest / "lnk"
        if self.kind == "exchange" and sub.is_symlink():
            exchange(sub, lnk)


def race_rounds(many, tmp_path: Path, kind: str, rounds: int) -> dict[str, int]:
    repo, cid, want, _ = many
    if kind == "exchange" and not can_exchange(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    outside = tmp_path / "outside"
    outside.mkdir()
    tally = {"ok": 0, "refused": 0, "swaps": 0, "outside": 0}
    for r in range(rounds):
        dest = tmp_path / f"dest{r}"
        (dest / "sub").mkdir(parents=True)
        (dest / "lnk").symlink_to(outside, target_is_directory=True)
        swapper = Swapper(dest, kind)
        swapper.start()
        try:
            repo.checkout(cid, dest, force=True)
            ok = True
        except CkstoreError as exc:
            assert isinstance(exc, UnsafePath), f"round {r}: {exc!r}"
            ok = False
        finally:
            swapper.stop.set()
            swapper.join()
        swapper.restore_layout()
        tally["swaps"] += swapper.swaps
        created = os.listdir(outside)
        tally["outside"] += len(created)
        assert created == [], f"round {r} ({kind}): created outside the destination: {created}"
        assert temps_under(tmp_path) == [], f"round {r} ({kind}): temporary files left"
        got = files_under(dest)
        if ok:
            tally["ok"] += 1
            if kind == "exchange":
                assert got == want, f"round {r}: a successful checkout is not byte-identical"
            else:  # the tree may have been rearranged by the swaps; the top level is untouched
                assert {k: v for k, v in got.items() if "/" not in k} == {k: v for k, v in want.items()
                                                                          if "/" not in k}
        else:
            tally["refused"] += 1
            assert got == {}, f"round {r}: a refused checkout left files under their final names"
    print(f"T15 {kind}: {rounds} rounds, {tally['ok']} succeeded, {tally['refused']} refused, "
          f"{tally['swaps']} swaps, {tally['outside']} entries created outside")
    return tally


@pytest.mark.parametrize("kind", ["exchange", "rename"])
def test_destination_component_swapped_for_symlink(many, tmp_path: Path, kind: str) -> None:
    tally = race_rounds(many, tmp_path, kind, 20)
    assert tally["outside"] == 0 and tally["swaps"] > 0


@soak
@skip_unless_soak
@pytest.mark.parametrize("kind", ["exchange", "rename"])
def test_destination_component_swapped_for_symlink_soak(many, tmp_path: Path, kind: str) -> None:
    tally = race_rounds(many, tmp_path, kind, 200)
    assert tally["outside"] == 0


# -- descriptors, static cases ---------------------------------------------------------------------------------------


def test_symlinked_destination_root_refused(many, tmp_path: Path) -> None:
    """The destination's last component must be a directory, not a symlink (O_NOFOLLOW), even with --force."""
    repo, cid, _, _ = many
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "dest").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath, match="not a directory"):
        repo.checkout(cid, tmp_path / "dest", force=True)
    assert os.listdir(outside) == []


def test_destination_below_a_symlinked_parent_is_followed(many, tmp_path: Path) -> None:
    """Components above the destination are the caller's choice and are followed."""
    repo, cid, want, _ = many
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real", target_is_directory=True)
    repo.checkout(cid, tmp_path / "via" / "dest")
    assert files_under(tmp_path / "real" / "dest") == want


def test_many_directories_beyond_the_descriptor_cache(tmp_path: Path) -> None:
    """More directories than descriptors kept open: re-walked through descriptors, every file in place."""
    src = tmp_path / "src"
    for i in range(restore._DIR_CACHE * 2 + 5):
        p = src / f"a{i % 7}" / f"b{i}" / "c" / "f.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"{i}\n")
    with Repo.init(tmp_path / "repo") as repo:
        cid = repo.commit(src, "dirs", capture_env=False).id
        before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
        repo.checkout(cid, tmp_path / "dest")
        if before is not None:
            assert len(os.listdir("/proc/self/fd")) <= before  # no descriptor leaked
    assert files_under(tmp_path / "dest") == files_under(src)


def test_file_in_place_of_a_directory_is_refused(many, tmp_path: Path) -> None:
    repo, cid, _, _ = many
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").write_text("a file where a directory belongs\n")
    with pytest.raises(UnsafePath, match="is not a directory"):
        repo.checkout(cid, dest, force=True)
    assert temps_under(dest) == [] and sorted(os.listdir(dest)) == ["sub"]
