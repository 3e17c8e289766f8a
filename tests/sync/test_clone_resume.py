"""A clone killed with SIGKILL is finished by the same `ckstore clone` command (RELIABILITY.md: "a killed clone
that could not be redone").

The remote is a real directory remote holding 80 MB of tensors (more than one 64 MiB fetch pack). The clone runs
as the `ckstore` command in a child process and is killed mid-transfer: once its unsealed pack in tmp/ has data,
or once its first pack is sealed. Then every other command inside says it is an incomplete clone and how to
finish it, a clone of another URL into it is refused, the same clone command finishes it (keeping the sealed
pack), `fsck --read-data` is clean and a checkout is byte-identical to what was committed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ckstore
from conftest import make_safetensors

CLI = [sys.executable, "-c", "import sys; from ckstore.cli import main; sys.argv[0] = 'ckstore'; main()"]
ENV = {**os.environ, "CKSTORE_AUTHOR": "t@ci"}
ENV.pop("CKSTORE_DEBUG", None)
ENV.pop("CKSTORE_DIR", None)


def ck(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint directory, directory remote it was pushed to): 80 MB of incompressible tensors."""
    base = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(1)
    ckpt = base / "ckpt"
    for i in range(4):
        make_safetensors(ckpt / f"shard{i}.safetensors",
                         {f"layer{i}.{j}": rng.standard_normal(1_250_000).astype(np.float32) for j in range(4)})
    (ckpt / "notes.bin").write_bytes(rng.bytes(300_000))
    with ckstore.Repo.init(base / "src") as repo:
        repo.commit(ckpt, "big")
        repo.remote_add("origin", str(base / "remote"))
        repo.push("origin")
    return ckpt, base / "remote"


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the clone finished before it could be killed: " + proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the clone never got there"
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def tmp_has_data(dest: Path) -> bool:
    tmp = dest / ".ckstore" / "tmp"
    try:
        return any(p.stat().st_size > (4 << 20) for p in tmp.iterdir())
    except (FileNotFoundError, OSError):
        return False


def sealed_pack(dest: Path) -> bool:
    return any((dest / ".ckstore" / "packs").glob("*/*.idx")) if (dest / ".ckstore" / "packs").is_dir() else False


def packs_of(dest: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in (dest / ".ckstore" / "packs").glob("*/*.pack")}


@pytest.mark.parametrize("moment", ["unsealed pack in tmp", "first pack sealed"])
def test_killed_clone_resumes(source: tuple[Path, Path], tmp_path: Path, moment: str) -> None:
    ckpt, remote = source
    dest = tmp_path / "clone"
    proc = subprocess.Popen([*CLI, "clone", str(remote), str(dest)], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(proc, (lambda: tmp_has_data(dest)) if moment.startswith("unsealed") else (lambda: sealed_pack(dest)))
    assert proc.returncode == -signal.SIGKILL
    assert (dest / ".ckstore" / "CLONING").is_file()
    sealed = packs_of(dest)
    if moment == "first pack sealed":
        assert sealed, "killed after a pack was sealed, yet none is there"

    for args in (["log"], ["pull"], ["branch"], ["fsck"]):
        r = ck(*args, cwd=dest)
        assert r.returncode != 0, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
        assert "incomplete clone of " + str(remote) in r.stderr, (args, r.stderr)
        assert f"ckstore clone {remote} {dest}" in r.stderr, (args, r.stderr)   # the command that finishes it

    other = tmp_path / "other-remote"
    r = ck("clone", other, dest, cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    r = ck("clone", remote, dest, "--metadata-only", cwd=tmp_path)
    assert r.returncode == 1 and "incomplete clone of" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (dest / ".ckstore" / "CLONING").is_file(), "a refused clone must leave the incomplete one alone"

    r = ck("clone", remote, dest, cwd=tmp_path)               # the same command again
    assert r.returncode == 0, r.stderr
    assert not (dest / ".ckstore" / "CLONING").exists()
    after = packs_of(dest)
    for name, inode in sealed.items():
        assert after.get(name) == inode, "a pack sealed before the kill was fetched again"

    r = ck("fsck", "--read-data", cwd=dest)
    assert r.returncode == 0, r.stdout + r.stderr
    r = ck("checkout", "main", "-o", tmp_path / "out", cwd=dest)
    assert r.returncode == 0, r.stderr
    for f in ckpt.iterdir():
        assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes(), f.name
    assert ck("log", cwd=dest).returncode == 0


def test_resume_before_config(source: tuple[Path, Path], tmp_path: Path) -> None:
    """Killed right after the marker, before the repository's config: the same clone still finishes it."""
    _, remote = source
    dest = tmp_path / "clone"
    (dest / ".ckstore" / "tmp").mkdir(parents=True)
    (dest / ".ckstore" / "CLONING").write_text(
        f'{{"url": "{remote}", "dest": "{dest}", "name": "origin", "partial": null, "created": true}}')
    r = ck("log", cwd=dest)
    assert r.returncode == 1 and "incomplete clone" in r.stderr, r.stderr
    r = ck("init", dest, cwd=tmp_path)
    assert r.returncode != 0 and "incomplete clone" in r.stderr, r.stderr
    assert ck("clone", remote, dest, cwd=tmp_path).returncode == 0
    assert ck("log", "--oneline", cwd=dest).stdout.count("\n") == 1
