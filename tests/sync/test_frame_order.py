"""The order frames travel in: push packs each delta frame just after its base (the same part of the model in
every version together), and fetch verifies them in the order they arrive with a bounded memory; frames from a
remote laid out otherwise (deltas before their bases) are let go of past a limit and read again, never lost.

Remotes are real directories under tmp_path; repositories are real, in tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ckstore
from ckstore.errors import CorruptObject
from ckstore.model import codec
from ckstore.storage.packs import parse_idx
from ckstore.sync import chunks as chunks_mod, push as push_mod, select

from conftest import make_safetensors
from remote_helpers import drifting, same_tree

CHUNK = 1 << 16


@pytest.fixture(autouse=True)
def author(monkeypatch):
    monkeypatch.setenv("CKSTORE_AUTHOR", "tester@example")


def drifting_versions(root: Path, n: int = 3) -> list[Path]:
    """`n` versions of six 256 KiB tensors (four chunks each) plus zero-filled biases, every float tensor moved
    a little each version: every chunk of a later version is a delta frame against the one before."""
    rng = np.random.default_rng(3)
    state = {f"layers.{i}.weight": (rng.standard_normal((256, 256)) * 0.02).astype(np.float32) for i in range(6)}
    state.update({f"layers.{i}.bias": np.zeros(16384, np.float32) for i in range(6)})
    out = []
    for v, st in drifting(state, rng, n):
        out.append(make_safetensors(root / f"v{v}" / "model.safetensors", st).parent)
    return out


def remote_frames(url: str) -> list[tuple[bytes, bytes | None]]:
    """(chunk, delta base or None) of every frame of a directory remote's packs, in pack order (one pack here)."""
    out = []
    for idx in sorted(Path(url, "packs").rglob("*.idx")):
        pack_id, entries = parse_idx(idx.read_bytes())
        data = idx.with_suffix(".pack").read_bytes()
        out += [(e.chunk, codec.frame_base(data[e.offset:e.offset + e.length])) for e in entries]
    return out


def pushed(tmp_path: Path, versions: list[Path]) -> tuple[str, list[bytes]]:
    url = str(tmp_path / "remote")
    with ckstore.Repo.init(tmp_path / "src", chunk_size=CHUNK) as repo:
        ids = [repo.commit(v, message=v.name) for v in versions]
        repo.remote_add("origin", url)
        repo.push()
    return url, ids


def test_push_puts_each_delta_just_after_its_base(tmp_path):
    versions = drifting_versions(tmp_path / "ck")
    url, _ = pushed(tmp_path, versions)
    frames = remote_frames(url)
    where = {c: i for i, (c, _) in enumerate(frames)}
    deltas = [(i, base) for i, (_, base) in enumerate(frames) if base is not None]
    assert len(deltas) >= 2 * 24            # v1 and v2: every weight chunk a delta
    for i, base in deltas:
        assert where[base] < i               # the base travels first...
        assert i - where[base] <= 3          # ...and next to it: v0, v1, v2 of one chunk side by side
    # the zero biases repeat within v0 (one chunk, six times): positions count repeats, so later chunks of v0
    # still sit beside their v1 and v2 versions
    with ckstore.Repo.open(tmp_path / "src") as repo:
        m = repo.engine.manifest_of(repo.engine.resolve("HEAD~2"))
    assert len(select.manifest_chunks(m)) < len(list(m.file_chunks(m.files)))


def test_fetch_of_a_remote_laid_out_deltas_first_spills_what_waits_and_reads_it_once(tmp_path, monkeypatch):
    versions = drifting_versions(tmp_path / "ck")
    upload = push_mod._upload_packs

    def reversed_upload(repo, remote, io, ordered, *rest):   # an older layout: deltas before their bases
        return upload(repo, remote, io, ordered[::-1], *rest)

    monkeypatch.setattr(push_mod, "_upload_packs", reversed_upload)
    url, ids = pushed(tmp_path, versions)
    frames = remote_frames(url)
    where = {c: i for i, (c, _) in enumerate(frames)}
    assert any(where[b] > i for i, (_, b) in enumerate(frames) if b is not None)
    stored = sum(p.stat().st_size for p in Path(url, "packs").rglob("*.pack"))

    for limit in (chunks_mod.WAIT_LIMIT, 4096):   # every waiting delta in memory; every one in the spill file
        monkeypatch.setattr(chunks_mod, "WAIT_LIMIT", limit)
        with ckstore.clone(url, tmp_path / f"c{limit}") as repo:
            assert repo.last_transfer.bytes_received < stored + 64 * 1024     # each frame read once
            assert repo.fsck(read_data=True).ok
            for v, cid in zip(versions, ids):
                repo.checkout(cid.id, tmp_path / f"out-{limit}-{v.name}")
                assert same_tree(v, tmp_path / f"out-{limit}-{v.name}")


def test_a_shallow_clone_reads_each_frame_of_the_chains_once(tmp_path, monkeypatch):
    """--depth 1 of a remote whose newest chunks are deltas on deltas: the bases come round after round while
    the deltas wait (spilled past the limit), never fetched twice."""
    versions = drifting_versions(tmp_path / "ck", 4)
    url, ids = pushed(tmp_path, versions)
    stored = sum(p.stat().st_size for p in Path(url, "packs").rglob("*.pack"))
    monkeypatch.setattr(chunks_mod, "WAIT_LIMIT", 4096)
    with ckstore.clone(url, tmp_path / "c", depth=1, checkout=tmp_path / "out") as repo:
        assert repo.last_transfer.bytes_received <= stored + 64 * 1024
    assert same_tree(versions[-1], tmp_path / "out")


def test_a_tampered_delta_is_refused_whichever_path_verifies_it(tmp_path, monkeypatch):
    versions = drifting_versions(tmp_path / "ck")
    url, _ = pushed(tmp_path, versions)
    frames = remote_frames(url)
    victim = next(c for c, b in frames if b is not None)
    for idx in Path(url, "packs").rglob("*.idx"):
        _, entries = parse_idx(idx.read_bytes())
        e = next((e for e in entries if e.chunk == victim), None)
        if e is not None:
            pack = idx.with_suffix(".pack")
            data = bytearray(pack.read_bytes())
            data[e.offset + e.length - 1] ^= 0x40            # in the compressed payload, past the header
            pack.write_bytes(bytes(data))
    for limit, name in ((chunks_mod.WAIT_LIMIT, "a"), (0, "b")):
        monkeypatch.setattr(chunks_mod, "WAIT_LIMIT", limit)
        with pytest.raises(CorruptObject) as err:
            ckstore.clone(url, tmp_path / name)
        assert victim.hex() in str(err.value)
        assert not (tmp_path / name).exists()      # a failed clone leaves nothing behind
