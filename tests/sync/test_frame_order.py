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
from remote_helpers import same_tree

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
    for v in range(n):
        if v:
            for k in state:
                state[k] = state[k] + (rng.standard_normal(state[k].shape) * 1e-5).astype(np.float32)
        d = root / f"v{v}"
        make_safetensors(d / "model.safetensors", state)
        out.append(d)
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


def test_fetch_of_a_remote_laid_out_deltas_first_reads_what_it_let_go_of_again(tmp_path, monkeypatch):
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

    with ckstore.clone(url, tmp_path / "roomy") as roomy:    # the default limit holds every waiting delta
        assert roomy.last_transfer.bytes_received < stored + 64 * 1024
        assert roomy.fsck(read_data=True).ok

    monkeypatch.setattr(chunks_mod, "WAIT_LIMIT", 4096)       # now every waiting delta is let go of
    with ckstore.clone(url, tmp_path / "tight") as tight:
        got = tight.last_transfer
        assert got.bytes_received > stored + 64 * 1024        # the deltas came twice
        assert tight.fsck(read_data=True).ok
        for v, cid in zip(versions, ids):
            tight.checkout(cid.id, tmp_path / f"out-{v.name}")
            assert same_tree(v, tmp_path / f"out-{v.name}")


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
