"""Fixtures shared by the test modules: writing safetensors files and a fresh repository."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pytest

# The soak tier (RELIABILITY.md): full counts, run with CKSTORE_SOAK=1 and `-m soak` (bench/soak.py runs it).
SOAK = os.environ.get("CKSTORE_SOAK") == "1"
soak = pytest.mark.soak
skip_unless_soak = pytest.mark.skipif(not SOAK, reason="soak test: set CKSTORE_SOAK=1")


def make_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                     metadata: dict[str, str] | None = None) -> Path:
    """Write `tensors` to `path` with the official `safetensors.numpy.save_file`; parent directories are created."""
    from safetensors.numpy import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(p), metadata=metadata)
    return p


@pytest.fixture(name="make_safetensors")
def make_safetensors_fixture() -> Callable[..., Path]:
    """The `make_safetensors(path, tensors, metadata=None)` helper, as a fixture."""
    return make_safetensors


def joined(sf) -> bytes:
    """A scanned file's bytes put back together from its spans, checking they cover it in order."""
    pos = 0
    for span in sf.spans:
        assert span.offset == pos
        pos += span.nbytes
    assert pos == sf.size
    return b"".join(bytes(s.data) for s in sf.spans)


def damage(reach: int, most: int = 5) -> dict:
    """Hypothesis strategies for `damaged`'s arguments, as `@given(**damage(reach))`: 1 to `most` flips at
    positions below `reach`, and no cut or one below `reach`."""
    from hypothesis import strategies as st
    return {"flips": st.lists(st.tuples(st.integers(0, reach), st.integers(1, 255)), min_size=1, max_size=most),
            "cut": st.one_of(st.none(), st.integers(0, reach))}


def damaged(blob: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    """`blob` with each (position, mask) XORed in (positions wrap around) and then cut at `cut` (wrapping too): the
    damage the format readers' fuzz tests hand them."""
    out = bytearray(blob)
    for at, x in flips:
        out[at % len(out)] ^= x
    return bytes(out if cut is None else out[: cut % (len(out) + 1)])


def two_versions(tmp_path: Path, name: str, one: bytes, two: bytes):
    """A new repository at tmp_path/"repo" with two commits of the file `name` (bytes `one`, then `two`), each
    checked out and compared byte for byte: (repo, first CommitResult, second); the caller closes the repo."""
    import ckstore
    repo = ckstore.Repo.init(tmp_path / "repo")
    (tmp_path / "ck").mkdir()
    commits = []
    for i, blob in enumerate((one, two)):
        (tmp_path / "ck" / name).write_bytes(blob)
        commits.append(repo.commit(tmp_path / "ck", f"version {i + 1}", capture_env=False))
    for c, blob in zip(commits, (one, two)):
        repo.checkout(c.id, tmp_path / c.id)
        assert (tmp_path / c.id / name).read_bytes() == blob
    return repo, commits[0], commits[1]


def run_cli(monkeypatch, capsys, *args: object) -> tuple[int, str, str]:
    """`ckstore ARGS...` through the console script's entry point, in-process (errors printed as users see them):
    (exit code, stdout, stderr)."""
    from ckstore import cli
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["ckstore", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def repo(tmp_path: Path):
    """A new, empty repository at tmp_path/"repo" (closed after the test)."""
    import ckstore

    r = ckstore.Repo.init(tmp_path / "repo")
    try:
        yield r
    finally:
        r.close()


from s3servers import moto_endpoint, weed_endpoint  # noqa: E402,F401  (fixtures shared by the S3 test modules)


@pytest.fixture(autouse=True)
def _encrypted_mode(monkeypatch):
    """CKSTORE_TEST_ENCRYPTED=1 runs the suite with every new repository encrypted (a fast scrypt, the passphrase
    in CKSTORE_PASSWORD): the engine, sync and API paths must behave the same on keyed ids and sealed bytes."""
    if not os.environ.get("CKSTORE_TEST_ENCRYPTED"):
        return
    from ckstore.engine.repository import Repository
    from ckstore.model import crypto
    monkeypatch.setattr(crypto, "SCRYPT", {"n": 1 << 10, "r": 8, "p": 1})
    monkeypatch.setenv("CKSTORE_PASSWORD", "encrypted test mode")
    create = Repository.create.__func__

    def encrypted_create(cls, path, **kw):
        if kw.get("encrypt") is None and not kw.get("incomplete_ok"):
            kw["encrypt"] = "encrypted test mode"
        return create(cls, path, **kw)
    monkeypatch.setattr(Repository, "create", classmethod(encrypted_create))
