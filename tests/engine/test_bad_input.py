"""Names and values no commit can store are refused before anything is written (RELIABILITY.md T14).

Each case is a real input: a safetensors header whose JSON names a tensor "\\udcff", a file whose name holds a
byte that is not UTF-8, a state dict nested 3,000 deep, integers past 2**64. Through the API each raises one
ckstore error; through the `ckstore` script each is exit code 1 with one `error:` line and no traceback; either
way every file of the repository (LMDB aside) is byte-identical afterwards: no orphan pack, no object, no ref.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ckstore
from ckstore.errors import CkstoreError, InvalidMetadata, MalformedCheckpoint, UsageError
from conftest import make_safetensors

CKSTORE = shutil.which("ckstore")
needs_script = pytest.mark.skipif(CKSTORE is None, reason="the ckstore console script is not installed")


def files_of(root: Path) -> dict[str, bytes]:
    """Every file under root/.ckstore (the LMDB environment aside) by relative path, with its bytes."""
    out = {}
    for dirpath, _, names in os.walk(root / ".ckstore"):
        for name in names:
            p = Path(dirpath) / name
            rel = p.relative_to(root / ".ckstore").as_posix()
            if not rel.startswith("cache/index.lmdb"):
                out[rel] = p.read_bytes()
    return out


def surrogate_safetensors(path: Path) -> Path:
    """A safetensors file, valid but for its one tensor's name: the JSON escape \\udcff (a lone surrogate)."""
    header = json.dumps({"\udcff": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, ensure_ascii=True)
    assert "\\udcff" in header
    text = header.encode("ascii")
    text += b" " * (-len(text) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(text)) + text + np.arange(4, dtype="<f4").tobytes())
    return path


def non_utf8_dir(path: Path) -> Path:
    """A checkpoint directory holding a good file and one named b"bad\\xff.bin"."""
    make_safetensors(path / "model.safetensors", {"w": np.ones(1000, dtype=np.float32)})
    fd = os.open(os.path.join(os.fsencode(path), b"bad\xff.bin"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, os.urandom(300_000))  # big enough to be chunked: its frames would go into a pack
    os.close(fd)
    return path


def deep(n: int) -> dict:
    d: dict = {"leaf": np.ones(2)}
    for _ in range(n):
        d = {"k": d}
    return d


def _deep_plain(n: int) -> dict:
    d: dict = {"leaf": 1}
    for _ in range(n):
        d = {"k": d}
    return d


@pytest.fixture
def seeded(tmp_path: Path):
    """A repository with one commit, and a snapshot of its files."""
    r = ckstore.Repo.init(tmp_path / "repo")
    r.commit(make_safetensors(tmp_path / "src" / "ok.safetensors", {"a": np.arange(100_000, dtype=np.float32)}),
             "first")
    yield r, files_of(tmp_path / "repo")
    r.close()


BAD_API_INPUTS = {
    "surrogate tensor name in safetensors": (lambda p: surrogate_safetensors(p / "s.safetensors"), {},
                                             MalformedCheckpoint, "\\udcff"),
    "non-UTF-8 file name": (lambda p: non_utf8_dir(p / "ckpt"), {}, MalformedCheckpoint, "\\udcff"),
    "surrogate state dict key": (lambda p: {"\udcff": np.ones(2)}, {}, UsageError, "\\udcff"),
    "surrogate state dict value": (lambda p: {"x": np.ones(2), "s": "a\ud800"}, {}, UsageError, "\\ud800"),
    "3,000-deep state dict": (lambda p: deep(3000), {}, UsageError, "deeper than 64"),
    "state dict int over 2**64": (lambda p: {"x": np.ones(2), "n": 2 ** 70}, {}, UsageError, "out of range"),
    "state dict int key over 2**64": (lambda p: {"x": np.ones(2), 2 ** 70: 1}, {}, UsageError, "out of range"),
    "metadata int over 2**64": (lambda p: {"x": np.ones(2)}, {"meta": {"n": 2 ** 70}}, InvalidMetadata,
                                "out of range"),
    "metadata int below -2**63": (lambda p: {"x": np.ones(2)}, {"params": {"n": -2 ** 63 - 1}}, InvalidMetadata,
                                  "out of range"),
    "step over 2**64": (lambda p: {"x": np.ones(2)}, {"step": 2 ** 64}, InvalidMetadata, "out of range"),
    "3,000-deep metadata": (lambda p: {"x": np.ones(2)}, {"meta": {"data": _deep_plain(3000)}},
                            InvalidMetadata, None),
    "surrogate metadata key": (lambda p: {"x": np.ones(2)}, {"params": {"\udcff": 1}}, InvalidMetadata, "\\udcff"),
    "surrogate message": (lambda p: {"x": np.ones(2)}, {"message": "oops\udcff"}, InvalidMetadata, "\\udcff"),
}


@pytest.mark.parametrize("case", list(BAD_API_INPUTS))
def test_api_refuses_before_writing(seeded, tmp_path: Path, case: str) -> None:
    repo, before = seeded
    make, kwargs, error, needle = BAD_API_INPUTS[case]
    src = make(tmp_path / "in")
    kwargs = dict(kwargs)
    message = kwargs.pop("message", "bad")
    with pytest.raises(error) as info:
        repo.commit(src, message, **kwargs)
    text = str(info.value)
    assert "\n" not in text and len(text) < 500
    text.encode("utf-8")  # printable as it is
    if needle:
        assert needle in text, text
    assert files_of(tmp_path / "repo") == before, "the refused commit wrote something"
    assert isinstance(info.value, CkstoreError)


def test_bounds_themselves_round_trip(repo) -> None:
    state = {"lo": -2 ** 63, "hi": 2 ** 64 - 1, "x": np.ones(2), "nest": _deep_plain(60), "s": "é ✓"}
    repo.commit(state, "edges", meta={"n": 2 ** 64 - 1, "m": -2 ** 63})
    back = repo.load("HEAD")
    assert back["lo"] == -2 ** 63 and back["hi"] == 2 ** 64 - 1 and back["nest"] == _deep_plain(60)
    assert repo.show("HEAD").commit.extra == {"n": 2 ** 64 - 1, "m": -2 ** 63}


# ------------------------------------------------------------------------------------------------------ the CLI


def run(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CKSTORE_AUTHOR": "t@ci"}
    env.pop("CKSTORE_DEBUG", None)
    env.pop("CKSTORE_DIR", None)
    return subprocess.run([CKSTORE, *[a if isinstance(a, bytes) else str(a) for a in args]], cwd=cwd, env=env,
                          capture_output=True, timeout=120)


BAD_CLI_INPUTS = {
    "surrogate tensor name": (lambda p: [surrogate_safetensors(p / "s.safetensors")], "\\udcff"),
    "non-UTF-8 file name": (lambda p: [non_utf8_dir(p / "ckpt")], "\\udcff"),
    "metadata int over 2**64": (lambda p: [make_safetensors(p / "m.safetensors", {"x": np.ones(3)}),
                                           "--meta", f"n:={2 ** 70}"], "out of range"),
    "3,000-deep metadata JSON": (lambda p: [make_safetensors(p / "m.safetensors", {"x": np.ones(3)}),
                                            "--meta", "deep:=" + "[" * 3000 + "]" * 3000], "--meta"),
    "non-UTF-8 message": (lambda p: [make_safetensors(p / "m.safetensors", {"x": np.ones(3)}),
                                     "-m", b"bad \xff message"], "\\udcff"),
}


@needs_script
@pytest.mark.parametrize("case", list(BAD_CLI_INPUTS))
def test_cli_refuses_before_writing(tmp_path: Path, case: str) -> None:
    root = tmp_path / "repo"
    assert run("init", root, cwd=tmp_path).returncode == 0
    ok = make_safetensors(tmp_path / "src" / "ok.safetensors", {"a": np.arange(100_000, dtype=np.float32)})
    assert run("commit", ok, "-m", "first", cwd=root).returncode == 0
    before = files_of(root)
    make, needle = BAD_CLI_INPUTS[case]
    args = make(tmp_path / "in")
    if "-m" not in args:
        args += ["-m", "bad"]
    r = run("commit", *args, cwd=root)
    err = r.stderr.decode("utf-8")  # printable: no surrogate reaches the terminal
    assert r.returncode == 1, err
    assert "Traceback" not in err and not r.stdout, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and [ln for ln in lines if ln.startswith("error:")] == lines[:1], err
    assert all(ln.startswith(("error: ", "hint: ")) for ln in lines), err
    assert needle in lines[0], err
    assert files_of(root) == before, "the refused commit wrote something"
    assert not list((root / ".ckstore" / "tmp").iterdir())
