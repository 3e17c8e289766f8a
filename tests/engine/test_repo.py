"""The Python API end to end on real files: round trips, dedup, state dicts, refs and revisions, metadata."""

import json
import os

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from ckstore import Repo
from ckstore.errors import (AlreadyExists, AmbiguousRevision, InvalidMetadata, MalformedCheckpoint, NotARepository,
                            ProtectedRef, UnknownRevision, UnsupportedFormat)

RNG = np.random.default_rng(42)


def tree_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "cache" not in p.parts)


def same_tree(a, b):
    files = tree_files(a)
    assert files == tree_files(b)
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def stored_bytes(repo):
    return sum(p.stat().st_size for p in repo.dir.rglob("*") if p.is_file() and "cache" not in p.parts)


@pytest.fixture
def repo(tmp_path):
    with Repo.init(tmp_path / "repo", chunk_size=64 * 1024) as r:
        yield r


def all_dtypes():
    return {
        "f32": RNG.standard_normal((33, 17)).astype(np.float32),
        "f16": RNG.standard_normal((100,)).astype(np.float16),
        "bf16": RNG.standard_normal((64, 64)).astype(ml_dtypes.bfloat16),
        "f8": RNG.standard_normal((40,)).astype(ml_dtypes.float8_e4m3fn),
        "f8b": RNG.standard_normal((40,)).astype(ml_dtypes.float8_e5m2),
        "i8": RNG.integers(-128, 127, (50,), dtype=np.int8),
        "bool": RNG.integers(0, 2, (7, 3)).astype(bool),
        "i64": RNG.integers(0, 1 << 40, (9,), dtype=np.int64),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "special": np.array([np.nan, -0.0, 0.0, np.inf, -np.inf], dtype=np.float32),
        "big": RNG.standard_normal((300, 300)).astype(np.float32),  # several chunks at 64 KiB
    }


def test_safetensors_round_trip_every_dtype(repo, tmp_path):
    src = tmp_path / "ckpt"
    src.mkdir()
    tensors = all_dtypes()
    # the official writer does not take float8 numpy arrays on every version: write those through ours
    from ckstore.formats.safetensors import build_header
    from ckstore.formats.base import dtype_name
    names = sorted(tensors)
    with open(src / "model.safetensors", "wb") as f:
        f.write(build_header([(n, dtype_name(tensors[n].dtype), tensors[n].shape, tensors[n].nbytes) for n in names]))
        for n in names:
            f.write(tensors[n].tobytes())
    info = repo.commit(src / "model.safetensors", "all dtypes")
    assert repo.ls(info.id)[0]["path"] == "model.safetensors"
    repo.checkout(info.id, tmp_path / "out")
    assert (tmp_path / "out/model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    loaded = repo.load(info.id)
    for n, arr in tensors.items():
        assert loaded[n].dtype == arr.dtype and loaded[n].shape == arr.shape
        assert loaded[n].tobytes() == arr.tobytes()


def test_hf_sharded_directory_with_opaque_files(repo, tmp_path):
    src = tmp_path / "hf"
    (src / "tokenizer").mkdir(parents=True)
    a = {"model.embed.weight": RNG.standard_normal((128, 64)).astype(np.float32)}
    b = {"model.layers.0.weight": RNG.standard_normal((64, 64)).astype(np.float32)}
    save_file(a, src / "model-00001-of-00002.safetensors")
    save_file(b, src / "model-00002-of-00002.safetensors")
    index = {"metadata": {"total_size": 0}, "weight_map": {**{k: "model-00001-of-00002.safetensors" for k in a},
                                                          **{k: "model-00002-of-00002.safetensors" for k in b}}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    (src / "config.json").write_text('{"hidden": 64}')
    (src / "tokenizer" / "vocab.bin").write_bytes(os.urandom(300_000))  # big opaque: chunked
    np.savez(src / "extra.npz", x=np.arange(10.0), y=np.ones((3, 3), np.int32))
    np.save(src / "bias.npy", np.arange(5, dtype=np.float16))
    (src / "empty.txt").write_bytes(b"")
    info = repo.commit(src, "hf dir")
    repo.checkout(info.id, tmp_path / "out")
    same_tree(src, tmp_path / "out")
    names = {t.name for t in repo.manifest(info.id).tensors}
    assert {"model.embed.weight", "model.layers.0.weight", "x", "y", "bias"} <= names


def test_recommit_is_nearly_free_and_one_changed_tensor_costs_that_tensor(repo, tmp_path):
    tensors = {f"layer{i}": RNG.standard_normal((256, 256)).astype(np.float32) for i in range(8)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, path)
    repo.commit(path, "v0", capture_env=False)
    before = stored_bytes(repo)
    repo.commit(path, "same again", capture_env=False)
    assert stored_bytes(repo) - before < 64 * 1024
    assert repo.show().new_bytes == 0
    tensors["layer3"] = RNG.standard_normal((256, 256)).astype(np.float32)
    save_file(tensors, path)
    before = stored_bytes(repo)
    repo.commit(path, "one tensor changed", capture_env=False)
    added = stored_bytes(repo) - before
    one = tensors["layer3"].nbytes
    assert one * 0.75 < added < one * 1.0 + 64 * 1024
    assert one * 0.75 < repo.show().new_bytes < one


def test_dedup_across_files_and_branches(repo, tmp_path):
    t = {"w": RNG.standard_normal((256, 256)).astype(np.float32)}
    save_file(t, tmp_path / "a.safetensors")
    repo.commit(tmp_path / "a.safetensors", "main")
    before = stored_bytes(repo)
    save_file({"renamed": t["w"]}, tmp_path / "b.safetensors")
    repo.commit(tmp_path / "b.safetensors", "other branch", branch="exp")
    assert stored_bytes(repo) - before < 64 * 1024


def test_nested_state_dict_round_trip(repo):
    state = {"model": {"w": RNG.standard_normal((4, 4)).astype(np.float32), "b": np.zeros(4, ml_dtypes.bfloat16)},
             "optimizer": {"state": {0: {"step": 10, "exp_avg": np.ones((4, 4), np.float32)}},
                           "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "name": "all"}]},
             "epoch": 3, "note": None}
    info = repo.commit(state, "state dict")
    loaded = repo.load(info.id)
    assert loaded["epoch"] == 3 and loaded["note"] is None
    assert loaded["optimizer"]["param_groups"] == [{"lr": 1e-3, "betas": (0.9, 0.999), "name": "all"}]
    assert list(loaded["optimizer"]["state"]) == [0]
    np.testing.assert_array_equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["model"]["b"].dtype == ml_dtypes.bfloat16
    assert repo.load(info.id, names=["model.w"])["model.w"].shape == (4, 4)


def test_state_dict_with_torch_tensors(repo):
    torch = pytest.importorskip("torch")
    state = {"w": torch.randn(8, 8), "h": torch.randn(5).to(torch.bfloat16), "i": torch.arange(3),
             "f8": torch.randn(4).to(torch.float8_e4m3fn)}
    info = repo.commit(state, "torch")
    loaded = repo.load(info.id, framework="torch")
    for k, v in state.items():
        assert loaded[k].dtype == v.dtype
        assert torch.equal(loaded[k].view(torch.uint8), v.view(torch.uint8))


def test_branches_tags_and_revisions(repo, tmp_path):
    ids = []
    for i in range(4):
        save_file({"w": np.full((4,), i, np.float32)}, tmp_path / "m.safetensors")
        ids.append(repo.commit(tmp_path / "m.safetensors", f"v{i}", tag="first" if i == 0 else None).id)
    assert repo.resolve("HEAD") == ids[3]
    assert repo.resolve("main~2") == ids[1] and repo.resolve("HEAD^") == ids[2] and repo.resolve("HEAD^^") == ids[1]
    assert repo.resolve("first") == ids[0] and repo.resolve(ids[2][:8]) == ids[2]
    repo.tag("annotated", "HEAD~1", message="a release")
    assert repo.resolve("annotated") == ids[2]
    with pytest.raises(AlreadyExists):
        repo.tag("first", "HEAD")
    repo.branch("exp", "HEAD~1")
    exp = repo.commit(tmp_path / "m.safetensors", "on exp", branch="exp")
    assert exp.parents == [ids[2]] and repo.resolve("main") == ids[3]
    assert [c.message for c in repo.log("exp")] == ["on exp", "v2", "v1", "v0"]
    with pytest.raises(UnknownRevision):
        repo.resolve("nope")
    with pytest.raises(UnknownRevision):
        repo.resolve("main~10")
    with pytest.raises(ProtectedRef, match="current branch"):
        repo.delete_branch("main")
    with pytest.raises(ProtectedRef, match="1 commit"):  # "on exp" is on no other ref: git's -d refuses too
        repo.delete_branch("exp")
    assert "exp" in [b.name for b in repo.branches()]
    assert repo.delete_branch("exp", force=True) == exp.id
    assert [b.name for b in repo.branches()] == ["main"]
    actions = [e["action"] for e in repo.audit()]
    assert actions.count("commit") == 5 and "branch" in actions and "tag" in actions and "branch-delete" in actions


def test_ambiguous_prefix(repo):
    from ckstore.model.objects import Tag, encode_object, object_id
    target = bytes.fromhex(repo.commit({"x": np.array([1])}, "c").id)
    seen = {}
    for i in range(1_000_000):  # birthday search over 4-hex-digit prefixes: a few hundred tries
        tag = Tag(target, f"t{i}", "me", 0.0, "")
        key = object_id(encode_object(tag)).hex()[:4]
        if key in seen:
            break
        seen[key] = tag
    repo.engine.store.put_object(tag)
    repo.engine.store.put_object(seen[key])
    with pytest.raises(AmbiguousRevision, match=key):
        repo.resolve(key)


def test_metadata_sections_and_schema(tmp_path):
    with Repo.init(tmp_path / "r", required={"metrics.val_loss": "number", "data.version": "string"}) as repo:
        save_file({"w": np.ones(3, np.float32)}, tmp_path / "m.safetensors")
        before = tree_files(repo.dir)
        with pytest.raises(InvalidMetadata, match="metrics.val_loss"):
            repo.commit(tmp_path / "m.safetensors", "no metrics", meta={"data": {"version": "v3"}})
        with pytest.raises(InvalidMetadata, match="data.version must be string"):
            repo.commit(tmp_path / "m.safetensors", "wrong type", metrics={"val_loss": 1.0},
                        meta={"data": {"version": 3}})
        assert tree_files(repo.dir) == before  # nothing written
        info = repo.commit(tmp_path / "m.safetensors", "ok", metrics={"val_loss": 0.3}, params={"lr": 3e-4},
                           meta={"data": {"version": "v3"}, "seeds": {"torch": 1}, "run": "abc"}, step=7)
        c = info.commit
        assert (c.step, c.metrics, c.params, c.data, c.seeds, c.extra) == (
            7, {"val_loss": 0.3}, {"lr": 3e-4}, {"version": "v3"}, {"torch": 1}, {"run": "abc"})
        assert c.env["python"] and "numpy" in c.env["packages"]


def test_bad_inputs_write_nothing(repo, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    before = tree_files(repo.dir)
    with pytest.raises(MalformedCheckpoint, match="bad.safetensors"):
        repo.commit(bad, "bad")
    with pytest.raises(MalformedCheckpoint):
        repo.commit(tmp_path, "dir holding a bad file")
    assert tree_files(repo.dir) == before


def test_open_errors(tmp_path):
    with pytest.raises(NotARepository):
        Repo.open(tmp_path)
    Repo.init(tmp_path / "r").close()
    with pytest.raises(AlreadyExists):
        Repo.init(tmp_path / "r")
    cfg = tmp_path / "r/.ckstore/config"
    text = cfg.read_text()
    cfg.write_text(text.replace('"version": 3', '"version": 4'))
    with pytest.raises(UnsupportedFormat, match="version 4"):
        Repo.open(tmp_path / "r")
    cfg.write_text(text.replace('"cdc"', '"cdc", "wormholes"'))
    with pytest.raises(UnsupportedFormat, match="feature 'wormholes' is not one this ckstore knows"):
        Repo.open(tmp_path / "r")
    cfg.write_text(text.replace('"version": 3', '"version": 1'))
    with pytest.raises(UnsupportedFormat, match="format version 1 has no place for a features list"):
        Repo.open(tmp_path / "r")


def test_found_by_walking_up_and_env(tmp_path, monkeypatch):
    Repo.init(tmp_path / "r").close()
    deep = tmp_path / "r/a/b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    with Repo.open() as repo:
        assert repo.root == (tmp_path / "r").resolve()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CKSTORE_DIR", str(tmp_path / "r"))
    with Repo.open() as repo:
        assert repo.root == (tmp_path / "r").resolve()


def test_lost_index_cache_is_rebuilt(repo, tmp_path):
    import shutil
    save_file({"w": RNG.standard_normal((128, 128)).astype(np.float32)}, tmp_path / "m.safetensors")
    info = repo.commit(tmp_path / "m.safetensors", "v0")
    root = repo.root
    repo.close()
    shutil.rmtree(root / ".ckstore/cache")
    with Repo.open(root) as again:
        again.checkout(info.id, tmp_path / "out")
        assert again.fsck(read_data=True).ok
    assert (tmp_path / "out/m.safetensors").read_bytes() == (tmp_path / "m.safetensors").read_bytes()


def test_checkout_refuses_non_empty_and_include_filters(repo, tmp_path):
    src = tmp_path / "d"
    src.mkdir()
    save_file({"w": np.ones(4, np.float32)}, src / "model.safetensors")
    (src / "config.json").write_text("{}")
    repo.commit(src, "v0")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("mine")
    with pytest.raises(AlreadyExists):
        repo.checkout("HEAD", out)
    assert tree_files(out) == ["keep"]
    assert repo.checkout("HEAD", out, include=["*.json"], force=True) == ["config.json"]
    assert tree_files(out) == ["config.json", "keep"]


def test_fine_tune_steps_are_stored_as_bounded_xor_deltas(repo, tmp_path):
    import ml_dtypes
    w = RNG.standard_normal((256, 512)).astype(np.float32)
    path = tmp_path / "m.safetensors"
    ids, versions = [], []
    for step in range(10):
        save_file({"w": w.astype(ml_dtypes.bfloat16), "w32": w}, path)
        versions.append(path.read_bytes())
        ids.append(repo.commit(path, f"step {step}", capture_env=False).id)
        w = w + RNG.standard_normal(w.shape).astype(np.float32) * 1e-3 * np.abs(w)
        if step == 0:
            full = repo.show().new_bytes
    later = repo.show().new_bytes
    assert later < full * 0.8  # deltas of small updates are smaller than a full frame
    depth_limit = repo.config.max_delta_depth
    for t in repo.manifest().tensors:
        for c in t.chunks:
            assert repo.engine.store.delta_depth(c, depth_limit + 5) <= depth_limit
    for i in range(10):  # every version, each the bytes it was committed as
        out = tmp_path / f"out{i}"
        repo.checkout(ids[i], out)
        assert (out / "m.safetensors").read_bytes() == versions[i], f"step {i}"
    assert repo.fsck(read_data=True).ok


def test_stat_cache_reuses_unchanged_files_and_never_hides_a_change(repo, tmp_path):
    import time
    path = tmp_path / "m.safetensors"
    w = RNG.standard_normal((128, 128)).astype(np.float32)
    save_file({"w": w}, path)
    old = time.time() - 3600
    os.utime(path, (old, old))  # old enough not to be "racily clean"
    first = repo.commit(path, "v0", capture_env=False)
    assert repo.engine.stat_cache.get(str(path), "m.safetensors", os.stat(path), repo.config.chunk_size) is not None
    again = repo.commit(path, "v0 again", capture_env=False)
    assert again.manifest == first.manifest
    # same size, same mtime, different bytes: ctime/inode still give it away
    w[0, 0] += 1
    save_file({"w": w}, path)
    os.utime(path, (old, old))
    changed = repo.commit(path, "changed", capture_env=False)
    assert changed.manifest != first.manifest
    repo.checkout("HEAD", tmp_path / "out")
    assert (tmp_path / "out/m.safetensors").read_bytes() == path.read_bytes()


def test_racily_clean_files_are_not_cached(repo, tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": np.ones(8, np.float32)}, path)
    repo.commit(path, "fresh file", capture_env=False)
    assert repo.engine.stat_cache.get(str(path), "m.safetensors", os.stat(path), repo.config.chunk_size) is None


def test_large_pack_written_in_batches_with_early_writeback(repo, tmp_path, monkeypatch):
    """48 MiB of incompressible bytes: several write batches and a background writeback before the seal."""
    from ckstore.storage import packs
    calls = []
    real = packs._writeback
    monkeypatch.setattr(packs, "_writeback", lambda fd: calls.append(fd) or real(fd))
    data = np.frombuffer(np.random.default_rng(9).bytes(48 << 20), dtype=np.uint8)
    assert data.nbytes > packs.FLUSH_EVERY + packs.BATCH
    path = tmp_path / "big.safetensors"
    save_file({"blob": data, "small": np.arange(10, dtype=np.float32)}, path)
    repo.commit(path, "big", capture_env=False)
    assert calls  # the disk started on the pack before it was sealed
    assert not list((repo.engine.store.tmp_dir).glob("*.pack"))  # sealed and renamed, nothing left behind
    assert repo.fsck(read_data=True).ok
    out = tmp_path / "out"
    repo.checkout("HEAD", out)
    assert (out / "big.safetensors").read_bytes() == path.read_bytes()
