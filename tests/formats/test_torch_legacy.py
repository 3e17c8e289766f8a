"""Legacy torch.save streams (before torch 1.6, or `_use_new_zipfile_serialization=False`) read as tensors by the
allowlist unpickler: names, dtypes and shapes found, every byte covered, nothing run; what does not follow the
layout stays opaque and restores byte for byte."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckstore
from ckstore.formats import scan_buffer
from ckstore.formats.base import itemsize
from conftest import damaged, joined, two_versions

torch = pytest.importorskip("torch")


def _legacy(obj, path: Path) -> bytes:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path.read_bytes()


def _state(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"encoder.weight": torch.randn(64, 32, generator=g), "encoder.bias": torch.zeros(64),
            "head.weight": torch.randn(10, 64, generator=g).to(torch.bfloat16),
            "steps": torch.tensor([7, 8, 9], dtype=torch.int64), "mask": torch.ones(5, dtype=torch.bool)}


def test_tensors_found_with_names_dtypes_and_shapes(tmp_path):
    data = _legacy(_state(), tmp_path / "m.pt")
    sf = scan_buffer("m.pt", memoryview(data))
    got = {s.tensor.name: (s.tensor.dtype, s.tensor.shape) for s in sf.tensors()}
    assert got == {"encoder.weight": ("F32", (64, 32)), "encoder.bias": ("F32", (64,)),
                   "head.weight": ("BF16", (10, 64)), "steps": ("I64", (3,)), "mask": ("BOOL", (5,))}
    assert joined(sf) == data
    w = next(s for s in sf.tensors() if s.tensor.name == "encoder.weight")
    assert bytes(w.data) == _state()["encoder.weight"].numpy().tobytes()


def test_optimizer_state_views_and_shared_storages(tmp_path):
    w = torch.randn(8, 8)
    obj = {"model": {"w": w, "tied": w}, "opt": {"state": {0: {"exp_avg": torch.zeros(8, 8)}}},
           "row": w[2], "epoch": 3}
    data = _legacy(obj, tmp_path / "ckpt.pt")
    sf = scan_buffer("ckpt.pt", memoryview(data))
    shapes = {s.tensor.name: s.tensor.shape for s in sf.tensors()}
    assert shapes["model.w"] == (8, 8)            # the storage is named by its first path; views share it
    assert shapes["opt.state.0.exp_avg"] == (8, 8)
    assert len(sf.tensors()) == 2 and joined(sf) == data


def test_commit_dedups_diffs_and_restores(tmp_path):
    one = _legacy(_state(0), tmp_path / "v1.pt")
    state = _state(0)
    state["head.weight"] = state["head.weight"] + 1         # one tensor changes
    two = _legacy(state, tmp_path / "v2.pt")
    repo, a, b = two_versions(tmp_path, "model.pt", one, two)
    shown = repo.show(b.id)
    assert {"encoder.weight", "head.weight", "steps"} <= {t.name for t in shown.manifest.tensors}
    # stored anew: about the one changed tensor (10x64 bf16 = 1280 bytes) and the rewritten pickle, not the rest
    assert shown.new_bytes < 8192, shown.new_bytes
    diff = repo.diff(a.id, b.id).tensors
    assert [t["name"] for t in diff["changed"]] == ["head.weight"]
    assert "encoder.weight" in diff["unchanged"]
    repo.close()


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path(_Boom.target),))


def test_hostile_and_damaged_streams_stay_opaque(tmp_path):
    data = _legacy(_state(), tmp_path / "m.pt")
    sentinel = tmp_path / "pwned"
    _Boom.target = str(sentinel)
    def dumps(*objs) -> bytes:
        return b"".join(pickle.dumps(o, protocol=2) for o in objs)
    f = io.BytesIO(data)
    for _ in range(3):
        pickle.load(f)                              # magic, protocol, sys info: plain values
    rest = data[f.tell():]
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    last = scan_buffer("m.pt", memoryview(data)).tensors()[-1]      # its element count sits just before it
    cases = {"hostile": dumps(0x1950A86A20F9469CFC6C, 1001, info, {"w": _Boom()}, []),
             "big endian": dumps(0x1950A86A20F9469CFC6C, 1001, {**info, "little_endian": False}) + rest,
             "wrong magic": dumps(0x1950A86A20F9469CFC6D, 1001, info) + rest,
             "truncated": data[: len(data) - 10], "cut in a pickle": data[:200],
             "wrong count": data[:last.offset - 8] + struct.pack("<q", 99) + data[last.offset:]}
    assert scan_buffer("ok.pt", memoryview(dumps(0x1950A86A20F9469CFC6C, 1001, info) + rest)).tensors()
    for name, blob in cases.items():
        sf = scan_buffer(f"{name}.pt", memoryview(blob))
        assert joined(sf) == blob, name
        assert sf.tensors() == [], name
    assert not sentinel.exists()
    # a legacy stream whose last storage is cut short commits and restores byte for byte
    repo = ckstore.Repo.init(tmp_path / "repo")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "cut.pt").write_bytes(cases["truncated"])
    c = repo.commit(tmp_path / "src", "cut", capture_env=False)
    repo.checkout(c.id, tmp_path / "out")
    assert (tmp_path / "out" / "cut.pt").read_bytes() == cases["truncated"]
    repo.close()


@pytest.fixture(scope="module")
def legacy_bytes(tmp_path_factory) -> bytes:
    return _legacy(_state(), tmp_path_factory.mktemp("fz") / "m.pt")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 10_000)))
def test_corrupted_streams_never_raise(legacy_bytes, flips, cut):
    blob = damaged(legacy_bytes, flips, cut)
    sf = scan_buffer("fuzz.pt", memoryview(blob))
    assert joined(sf) == blob
    for s in sf.tensors():                      # a labelled span is exactly its shape's bytes, whatever survived
        assert s.nbytes == int(np.prod(s.tensor.shape)) * itemsize(s.tensor.dtype)


def test_not_a_torch_pickle_is_opaque(tmp_path):
    for blob in (pickle.dumps({"a": 1}, protocol=2), b"\x80\x02garbage", pickle.dumps(list(range(10)), protocol=4)):
        sf = scan_buffer("x.pt", memoryview(blob))
        assert sf.tensors() == [] and joined(sf) == blob
