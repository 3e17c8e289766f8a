"""`clone --checkout DIR`: the cloned branch's files are written while the data arrives, byte-identical and
verified as `checkout` writes them; bad input is refused before anything is made; a failure leaves neither the
repository nor a file or temporary file of the checkout.

Remotes are real directories and a moto S3 server on loopback; the CLI runs as a real process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ckstore
from ckstore.errors import AlreadyExists, CorruptObject, UsageError
from ckstore.storage.packs import parse_idx

from conftest import make_safetensors
from remote_helpers import drifting, make_remote, same_tree

CHUNK = 1 << 16


@pytest.fixture(autouse=True)
def author(monkeypatch):
    monkeypatch.setenv("CKSTORE_AUTHOR", "tester@example")


def versions(root: Path, n: int = 3) -> list[Path]:
    """A model directory (two safetensors shards in a subdirectory, a config, a tokenizer file) in `n` versions;
    every float tensor drifts each version, so later chunks are delta frames, and one tensor repeats a chunk."""
    rng = np.random.default_rng(11)
    state = {f"h.{i}.w": (rng.standard_normal((192, 256)) * 0.02).astype(np.float32) for i in range(4)}
    state["h.0.b"] = np.zeros(65536, np.float32)                     # one chunk, four times over
    out = []
    for v, state in drifting(state, rng, n):
        d = root / f"v{v}"
        make_safetensors(d / "shards" / "model-00001-of-00002.safetensors", dict(list(state.items())[:2]))
        make_safetensors(d / "shards" / "model-00002-of-00002.safetensors", dict(list(state.items())[2:]))
        (d / "config.json").write_text(json.dumps({"step": v, "hidden": 256}))
        (d / "tokenizer.txt").write_bytes(rng.bytes(3000))
        out.append(d)
    return out


def published(tmp_path: Path, url: str, opts: dict, n: int = 3) -> list[Path]:
    vs = versions(tmp_path / "ck", n)
    with ckstore.Repo.init(tmp_path / "src", chunk_size=CHUNK) as repo:
        for v in vs:
            repo.commit(v, message=v.name)
        repo.remote_add("origin", url, **opts)
        repo.push()
    return vs


def no_temps(d: Path) -> bool:
    return not [p for p in d.rglob("*") if p.name.startswith(".ckstore-tmp")]


@pytest.mark.parametrize("kind", ["directory", "s3-moto"])
def test_clone_checkout_writes_the_newest_files_byte_identical(request, tmp_path, monkeypatch, kind):
    url, opts = make_remote(request, tmp_path, monkeypatch, kind)
    vs = published(tmp_path, url, opts)
    out = tmp_path / "work" / "model"
    with ckstore.clone(url, tmp_path / "clone", checkout=out, **opts) as repo:
        assert repo.last_transfer.checked_out == str(out.resolve())
        assert repo.fsck(read_data=True).ok
        assert len(repo.log()) == 3
    assert same_tree(vs[-1], out) and no_temps(out)
    assert (out / "shards" / "model-00002-of-00002.safetensors").stat().st_mode & 0o777 == 0o644 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_depth_one_clone_checkout_and_an_empty_existing_directory(tmp_path):
    url = str(tmp_path / "remote")
    vs = published(tmp_path, url, {})
    out = tmp_path / "empty"
    out.mkdir()
    with ckstore.clone(url, tmp_path / "clone", depth=1, checkout=out) as repo:
        assert repo.last_transfer.checked_out == str(out.resolve())
    assert same_tree(vs[-1], out) and no_temps(out)


def test_bad_destinations_and_filters_are_refused_before_anything_is_made(tmp_path):
    url = str(tmp_path / "remote")
    published(tmp_path, url, {}, n=1)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(AlreadyExists, match="not an empty directory"):
        ckstore.clone(url, tmp_path / "c1", checkout=busy)
    assert not (tmp_path / "c1").exists() and [p.name for p in busy.iterdir()] == ["keep.txt"]
    with pytest.raises(UsageError, match="--filter"):
        ckstore.clone(url, tmp_path / "c2", filter="tensors=h.0.*", checkout=tmp_path / "o2")
    with pytest.raises(UsageError, match="repository's own directory"):
        ckstore.clone(url, tmp_path / "c3", checkout=tmp_path / "c3")
    assert not any((tmp_path / n).exists() for n in ("c2", "o2", "c3"))


def test_a_damaged_remote_leaves_no_repository_and_no_file(tmp_path):
    url = str(tmp_path / "remote")
    published(tmp_path, url, {})
    packs = sorted(Path(url, "packs").rglob("*.pack"))
    idx = packs[-1].with_suffix(".idx")
    _, entries = parse_idx(idx.read_bytes())
    e = entries[len(entries) // 2]
    data = bytearray(packs[-1].read_bytes())
    data[e.offset + e.length - 2] ^= 0x01
    packs[-1].write_bytes(bytes(data))
    out = tmp_path / "new" / "model"
    with pytest.raises(CorruptObject, match=e.chunk.hex()):
        ckstore.clone(url, tmp_path / "clone", checkout=out)
    assert not (tmp_path / "clone").exists()
    assert not out.exists(), list(out.rglob("*"))  # made by the clone, removed with it
    premade = tmp_path / "premade"
    premade.mkdir()
    with pytest.raises(CorruptObject):
        ckstore.clone(url, tmp_path / "clone2", checkout=premade)
    assert premade.is_dir() and not list(premade.iterdir())   # the user's directory stays, empty


def test_cli_clone_checkout_reports_where(tmp_path):
    url = str(tmp_path / "remote")
    vs = published(tmp_path, url, {})
    env = {**os.environ, "CKSTORE_AUTHOR": "tester@example"}
    r = subprocess.run([sys.executable, "-m", "ckstore", "clone", url, str(tmp_path / "c"), "--checkout",
                        str(tmp_path / "o"), "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["checked_out"] == str((tmp_path / "o").resolve())
    assert same_tree(vs[-1], tmp_path / "o")
    r = subprocess.run([sys.executable, "-m", "ckstore", "clone", url, str(tmp_path / "c2"), "--checkout",
                        str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "not an empty directory" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c2").exists()
