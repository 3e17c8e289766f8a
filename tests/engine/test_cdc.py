"""Opaque runs cut by content (format version 3, feature "cdc"): an insertion or a deletion re-stores about one
chunk, not the rest of the file; tensors keep their element-aligned chunks; a repository of an older version keeps
fixed cuts until `migrate` raises it; a push raises an older remote's config before any object of the feature
reaches it, and a served remote lets a push token make that one config change and no other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import ckstore
from ckstore.errors import RemoteAccessDenied
from ckstore.model.chunking import CDC_MAX, CDC_MIN, cut_by_content
from ckstore.model.objects import ChunkRun

RNG = np.random.default_rng(42)
BLOB = RNG.integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()       # 3 MiB of opaque bytes


def test_cut_points_are_pinned():
    """The cut points of a fixed input never move: if they did, no chunk of an older version would be found."""
    data = memoryview(np.random.default_rng(7).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes())
    lengths = [len(c) for c in cut_by_content(data)]
    assert lengths == [123851, 82332, 110465, 113911, 24554, 46999, 50887, 65589, 114189, 43506, 48601, 73311,
                       46468, 103913]
    assert sum(lengths) == len(data)
    assert all(CDC_MIN <= n <= CDC_MAX for n in lengths[:-1])


def _commit_versions(tmp_path: Path, versions: list[bytes], init: dict | None = None):
    repo = ckstore.Repo.init(tmp_path / "repo", **(init or {}))
    src = tmp_path / "src"
    src.mkdir()
    ids = []
    for i, blob in enumerate(versions):
        (src / "blob.bin").write_bytes(blob)
        ids.append(repo.commit(src, f"v{i}", capture_env=False).id)
    for oid, blob in zip(ids, versions):
        repo.checkout(oid, tmp_path / "out" / oid)
        assert (tmp_path / "out" / oid / "blob.bin").read_bytes() == blob
    return repo, ids


def _new_chunks(repo, a: str, b: str) -> int:
    return len(repo.manifest(b).chunk_ids() - repo.manifest(a).chunk_ids())


@pytest.mark.parametrize("edit", ["insert front", "insert middle", "delete middle", "overwrite", "append"])
def test_an_edit_restores_at_most_two_chunks(tmp_path, edit):
    mid = len(BLOB) // 2
    changed = {"insert front": b"X" + BLOB, "insert middle": BLOB[:mid] + b"inserted" * 100 + BLOB[mid:],
               "delete middle": BLOB[:mid] + BLOB[mid + 5000:], "overwrite": BLOB[:mid] + b"Y" * 10 + BLOB[mid + 10:],
               "append": BLOB + b"Z" * 1000}[edit]
    repo, (a, b) = _commit_versions(tmp_path, [BLOB, changed])
    (run,) = repo.manifest(b).files[0].segments
    assert isinstance(run, ChunkRun) and run.lengths is not None and len(run.chunks) > 30
    assert _new_chunks(repo, a, b) <= 2
    assert repo.show(b).new_bytes < 2 * CDC_MAX + 4096
    repo.close()


def test_fixed_cuts_restore_the_rest_of_the_file(tmp_path):
    """The same insertion in a version-1 repository (fixed 1 MiB cuts) re-stores every chunk after it."""
    repo = ckstore.Repo.init(tmp_path / "repo")
    cfg = tmp_path / "repo" / ".ckstore" / "config"
    raw = json.loads(cfg.read_text())
    raw.pop("features"), raw.pop("check")
    raw["version"] = 1
    cfg.write_text(json.dumps(raw))
    repo.close()
    src = tmp_path / "src"
    src.mkdir()
    with ckstore.Repo.open(tmp_path / "repo") as repo:
        assert repo.format_version == 1
        ids = []
        for blob in (BLOB, b"X" + BLOB):
            (src / "blob.bin").write_bytes(blob)
            ids.append(repo.commit(src, "v", capture_env=False).id)
        (run,) = repo.manifest(ids[1]).files[0].segments
        assert run.lengths is None and run.chunk_size == 1 << 20
        assert _new_chunks(repo, *ids) == 4                        # all of it
        assert repo.upgrade() == (1, 3)
        (src / "blob.bin").write_bytes(b"XY" + BLOB)
        c = repo.commit(src, "after", capture_env=False).id
        (src / "blob.bin").write_bytes(b"XYZ" + BLOB)
        d = repo.commit(src, "after", capture_env=False).id
        assert repo.manifest(c).files[0].segments[0].lengths is not None
        assert _new_chunks(repo, c, d) <= 2
        repo.checkout(d, tmp_path / "out")
        assert (tmp_path / "out" / "blob.bin").read_bytes() == b"XYZ" + BLOB


def test_tensors_keep_aligned_chunks_and_a_big_header_is_cut_by_content(tmp_path):
    w = RNG.standard_normal((1024, 512)).astype(np.float32)
    meta = {f"key{i}": "v" * 100 for i in range(1500)}          # a 160 KB JSON header: an opaque run
    src = tmp_path / "src"
    src.mkdir()
    repo = ckstore.Repo.init(tmp_path / "repo")
    save_file({"w": w}, str(src / "m.safetensors"), metadata=meta)
    a = repo.commit(src, "a", capture_env=False).id
    save_file({"w": w}, str(src / "m.safetensors"), metadata={"new": "first", **meta})
    b = repo.commit(src, "b", capture_env=False).id
    m = repo.manifest(b)
    (t,) = m.tensors
    assert t.chunk_bytes == 1 << 20 and t.chunks == repo.manifest(a).tensors[0].chunks
    runs = [s for s in m.files[0].segments if isinstance(s, ChunkRun)]
    assert len(runs) == 1 and runs[0].lengths is not None
    assert _new_chunks(repo, a, b) <= 2
    repo.close()


def _v1_remote(tmp_path: Path) -> Path:
    """A directory remote whose config says version 1 (as one pushed by an older ckstore)."""
    old = ckstore.Repo.init(tmp_path / "old")
    old.commit({"w": np.zeros(8, np.float32)}, "old", capture_env=False)
    old.remote_add("origin", str(tmp_path / "remote"))
    old.push("origin")
    old.close()
    cfg = tmp_path / "remote" / "config"
    raw = json.loads(cfg.read_text())
    raw.pop("features"), raw.pop("check")
    raw["version"] = 1
    cfg.write_text(json.dumps(raw))
    return tmp_path / "remote"


def test_a_push_raises_an_older_remote_before_sending_content_cut_runs(tmp_path):
    remote = _v1_remote(tmp_path)
    repo, ids = _commit_versions(tmp_path, [BLOB])
    repo.remote_add("origin", str(remote))
    repo.push("origin", ["main"], force=True)
    raw = json.loads((remote / "config").read_text())
    assert raw["version"] == 3 and raw["features"] == ["cdc"]
    with ckstore.clone(str(remote), tmp_path / "clone") as c:
        c.checkout(ids[0], tmp_path / "cloned")
    assert (tmp_path / "cloned" / "blob.bin").read_bytes() == BLOB
    repo.close()


def test_a_served_remote_lets_a_push_token_raise_the_version_and_nothing_else(tmp_path, monkeypatch):
    from serve.conftest import start
    from ckstore.transport.http import HttpTransport
    served = start(tmp_path / "served")
    try:
        remote = _v1_remote(tmp_path)
        (served.root / "team").mkdir()
        for p in remote.rglob("*"):
            if p.is_file():
                (served.root / "team" / p.relative_to(remote)).parent.mkdir(parents=True, exist_ok=True)
                (served.root / "team" / p.relative_to(remote)).write_bytes(p.read_bytes())
        pusher = served.token("push:refs/heads/*")
        t = HttpTransport(served.url("team"), token=pusher)
        data, etag = t.get_with_etag("config")
        raw = json.loads(data)
        bigger = {**raw, "chunk_size": raw["chunk_size"] * 2}
        with pytest.raises(RemoteAccessDenied, match="admin"):
            t.put("config", json.dumps(bigger).encode(), if_match=etag)
        monkeypatch.setenv("CKSTORE_TOKEN", pusher)
        repo, ids = _commit_versions(tmp_path, [BLOB])
        repo.remote_add("origin", served.url("team"))
        repo.push("origin", ["main"], force=True)
        raw = json.loads((served.root / "team" / "config").read_text())
        assert raw["version"] == 3 and raw["features"] == ["cdc"] and raw["chunk_size"] == 1 << 20
        repo.close()
    finally:
        served.server.stop()
