"""A hostile remote cannot make clone or pull allocate what its bytes do not hold (RELIABILITY.md T16).

Each remote is real: a small repository pushed to a directory remote, whose files are then rewritten so they
declare far more than they hold — pack index entries and frames claiming 256 MiB chunks (zstd bombs that really
decode to that), objects whose zstd frames declare 256 MiB, ref and HEAD files of 1 GiB (sparse), a config whose
schema is malformed. Each is cloned by the `ckstore` command in a child process whose peak RSS is measured: it
must stay under 128 MiB, fail with one `error:` line and no traceback, and leave no repository behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard

import ckstore
from ckstore.model import codec
from ckstore.storage.packs import idx_bytes, pack_bytes, parse_idx

BOMB = 256 << 20
RSS_LIMIT_KB = 128 << 10
# Runs a command as its only child and prints the child's peak RSS (KiB) last: RUSAGE_CHILDREN of a fresh
# process covers that one child alone.
MEASURE = ("import resource, subprocess, sys\n"
           "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
           "sys.stdout.buffer.write(r.stdout); sys.stderr.buffer.write(r.stderr)\n"
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
           "sys.exit(r.returncode)\n")
CLI = [sys.executable, "-c", "import sys; from ckstore.cli import main; sys.argv[0] = 'ckstore'; main()"]


def measured(*args: object, cwd: Path) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in KiB) of `ckstore ARGS` run in a child process."""
    env = {**os.environ, "CKSTORE_AUTHOR": "t@ci"}
    env.pop("CKSTORE_DEBUG", None)
    r = subprocess.run([sys.executable, "-c", MEASURE, *CLI, *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    return r.returncode, r.stderr, int(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory remote holding three commits of a small model (several packs' worth of chunks)."""
    base = tmp_path_factory.mktemp("hostile")
    remote = base / "remote"
    with ckstore.Repo.init(base / "src") as repo:
        rng = np.random.default_rng(0)
        for step in range(3):
            repo.commit({f"w{i}": rng.standard_normal(10_000).astype(np.float32) for i in range(4)}, f"step {step}")
        repo.remote_add("origin", str(remote))
        repo.push("origin")
    return remote


def copy_of(pushed: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "remote"
    shutil.copytree(pushed, dst)
    return dst


def bomb_frames(remote: Path, skip: set[str] = frozenset()) -> None:
    """Every frame (of the packs whose .idx is not named in `skip`) becomes a grouped frame with one zstd plane
    that really decodes to 256 MiB, and every index entry says so (the pack is rebuilt: its checksums and its
    name are right)."""
    plane = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(bytes(BOMB))
    frame = codec.HEADER.pack(codec.GROUPED, 0, 1, 0, BOMB) + codec.PLANE.pack(codec.PLANE_ZSTD, len(plane)) + plane
    for idx in list(remote.glob("packs/*/*.idx")):
        if idx.name in skip:
            continue
        _, entries = parse_idx(idx.read_bytes())
        pack_id, data, new = pack_bytes([(e.chunk, frame, BOMB) for e in entries])
        idx.unlink()
        idx.with_suffix(".pack").unlink()
        out = remote / "packs" / pack_id.hex()[:2] / pack_id.hex()
        out.parent.mkdir(exist_ok=True)
        out.with_suffix(".pack").write_bytes(data)
        out.with_suffix(".idx").write_bytes(idx_bytes(pack_id, new))


def bomb_objects(remote: Path, kind: str) -> None:
    """Every object of `kind` ("commit" or "manifest") becomes a zstd frame that really decodes to 256 MiB."""
    bomb = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(bytes(BOMB))
    for path in remote.glob("objects/*/*"):
        raw = zstandard.ZstdDecompressor().decompress(path.read_bytes())
        if raw[2:2 + len(kind)] == kind.encode():  # [type, ...]: a fixarray, then the type's fixstr
            path.write_bytes(bomb)


def huge_file(path: Path) -> None:
    """A 1 GiB file that takes no space: a valid id followed by a sparse hole."""
    text = path.read_bytes()
    with open(path, "wb") as f:
        f.write(text)
        f.truncate(1 << 30)


HOSTILE = {
    "frames of 256 MiB": (bomb_frames, "declares a frame"),
    "commits of 256 MiB": (lambda r: bomb_objects(r, "commit"), "decoded bytes"),
    "manifests of 256 MiB": (lambda r: bomb_objects(r, "manifest"), "decoded bytes"),
    "1 GiB ref": (lambda r: huge_file(r / "refs" / "heads" / "main"), "refs/heads/main"),
    "1 GiB HEAD": (lambda r: huge_file(r / "HEAD"), "HEAD"),
    "schema.required a list": (lambda r: _edit_config(r, schema={"required": ["x"]}), "schema.required"),
    "chunk_size a string": (lambda r: _edit_config(r, chunk_size="1048576"), "chunk_size"),
    "chunk_size 1 TiB": (lambda r: _edit_config(r, chunk_size=1 << 40), "chunk_size"),
}


def _edit_config(remote: Path, **changes: object) -> None:
    cfg = json.loads((remote / "config").read_text())
    cfg.update(changes)
    (remote / "config").write_text(json.dumps(cfg))


def remote_bytes(remote: Path) -> int:
    return sum(os.stat(p).st_blocks * 512 for p in remote.rglob("*") if p.is_file())


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_clone_is_bounded_and_clean(pushed: Path, tmp_path: Path, case: str) -> None:
    remote = copy_of(pushed, tmp_path)
    make, needle = HOSTILE[case]
    make(remote)
    assert remote_bytes(remote) < 1 << 20, "the hostile remote is meant to be small"
    code, err, rss = measured("clone", remote, tmp_path / "clone", cwd=tmp_path)
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss // 1024} MiB"
    assert code == 1, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and all(ln.startswith(("error: ", "hint: ")) for ln in lines), err
    assert needle in lines[0], err
    assert not (tmp_path / "clone").exists(), "a failed clone left a half-made repository"


def test_hostile_pull_is_bounded(pushed: Path, tmp_path: Path) -> None:
    """A clone made while the remote was sound, pulled after its new commit's frames became bombs."""
    remote = copy_of(pushed, tmp_path)
    with ckstore.clone(str(remote), tmp_path / "clone"):
        pass
    old = {p.name for p in remote.glob("packs/*/*.idx")}
    with ckstore.clone(str(remote), tmp_path / "other") as other:
        other.commit({"w0": np.ones(50_000, dtype=np.float32)}, "new")
        other.push("origin")
    bomb_frames(remote, skip=old)  # only the pack the last push added
    before = sorted(p.relative_to(tmp_path / "clone").as_posix() for p in (tmp_path / "clone").rglob("*.pack"))
    code, err, rss = measured("pull", cwd=tmp_path / "clone")
    assert code == 1 and "Traceback" not in err and err.startswith("error: "), err
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss // 1024} MiB"
    after = sorted(p.relative_to(tmp_path / "clone").as_posix() for p in (tmp_path / "clone").rglob("*.pack"))
    assert after == before


def test_sound_remote_clone_rss(pushed: Path, tmp_path: Path) -> None:
    """The baseline: the same remote, untouched, clones within the same bound."""
    code, err, rss = measured("clone", pushed, tmp_path / "clone", cwd=tmp_path)
    assert code == 0, err
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss // 1024} MiB"


def test_push_of_bigger_chunks_than_the_remote_takes_is_refused(tmp_path: Path) -> None:
    """Clones bound a remote's frames by its chunk size, so a push must not store bigger ones there."""
    import numpy as np

    from ckstore import Repo
    from ckstore.errors import UnsupportedFormat
    with Repo.init(tmp_path / "small", chunk_size=65536) as small:
        small.commit({"w": np.ones(4, np.float32)}, "a", capture_env=False)
        small.remote_add("origin", str(tmp_path / "remote"))
        small.push()
    with Repo.init(tmp_path / "big") as big:  # 1 MiB chunks
        big.commit({"w": np.arange(1 << 18, dtype=np.float32)}, "b", capture_env=False)
        big.remote_add("origin", str(tmp_path / "remote"))
        def stored() -> list[str]:  # the push's own (released) writer lease and staging dir are no data
            return sorted(p.name for p in (tmp_path / "remote").rglob("*")
                          if not {"locks", "tmp"} & set(p.relative_to(tmp_path / "remote").parts))
        before = stored()
        with pytest.raises(UnsupportedFormat, match="chunk size"):
            big.push(branches=["main"], force=True)
        assert stored() == before
