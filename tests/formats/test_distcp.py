"""torch.distributed.checkpoint directories written by `dcp.save`: the `.distcp` files' tensor items become tensors
named by their fully qualified names (the `.metadata` read through the allowlist unpickler), so a save that
changes one tensor stores about that tensor; hostile or damaged metadata leaves the data files opaque, restored
byte for byte, never an exception."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckstore
from ckstore.formats import scan_path
from ckstore.formats.dcp import read_metadata, scan
from conftest import damage, damaged, joined

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")   # "assuming the intent is to save in a single process"


def _model(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"embed.weight": torch.randn(512, 256, generator=g), "blocks.0.w": torch.randn(256, 256, generator=g),
            "blocks.0.b": torch.zeros(256), "head.weight": torch.randn(256, 256, generator=g).half(),
            "step": 3, "extra": {"ids": torch.arange(100)}}


def _save(state: dict, path: Path, threads: int = 1) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, storage_writer=dcp.FileSystemWriter(str(path), thread_count=threads))
    return path


def _tensors(path: Path) -> dict:
    out = {}
    for f in sorted(path.iterdir()):
        for s in scan_path(f, f.name).tensors():
            out[s.tensor.name] = (f.name, s.tensor.dtype, s.tensor.shape)
    return out


def test_items_are_tensors_named_by_fqn(tmp_path):
    path = _save(_model(), tmp_path / "ckpt", threads=2)
    got = _tensors(path)
    assert {k: v[1:] for k, v in got.items()} == {
        "embed.weight": ("F32", (512, 256)), "blocks.0.w": ("F32", (256, 256)), "blocks.0.b": ("F32", (256,)),
        "head.weight": ("F16", (256, 256)), "extra.ids": ("I64", (100,))}
    assert len({v[0] for v in got.values()}) == 2                 # spread over both data files
    for f in path.glob("*.distcp"):
        sf = scan_path(f, f.name)
        assert joined(sf) == f.read_bytes()
        want = {n: t for n, t in _model().items() if isinstance(t, torch.Tensor)} | {"extra.ids": torch.arange(100)}
        for s in sf.tensors():
            assert bytes(s.data) == want[s.tensor.name].numpy().tobytes()


def test_a_save_with_one_changed_tensor_stores_about_that_tensor(tmp_path):
    repo = ckstore.Repo.init(tmp_path / "repo")
    one, two = _model(), _model()
    two["blocks.0.w"] = two["blocks.0.w"] + 1
    a = repo.commit(_save(one, tmp_path / "a"), "first", capture_env=False)
    b = repo.commit(_save(two, tmp_path / "b"), "second", capture_env=False)
    diff = repo.diff(a.id, b.id).tensors
    assert [t["name"] for t in diff["changed"]] == ["blocks.0.w"]
    assert set(diff["unchanged"]) == {"embed.weight", "blocks.0.b", "head.weight", "extra.ids"}
    changed = 256 * 256 * 4
    assert repo.show(b.id).new_bytes < changed + 16384              # the tensor, the metadata, the item headers
    repo.checkout(b.id, tmp_path / "out")
    for f in (tmp_path / "b").iterdir():
        assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes()
    state = {k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else v for k, v in _model(9).items()}
    state["extra"] = {"ids": torch.zeros(100, dtype=torch.int64)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(state, storage_reader=dcp.FileSystemReader(str(tmp_path / "out")))
    assert torch.equal(state["blocks.0.w"], two["blocks.0.w"]) and state["step"] == 3
    repo.close()


def test_a_data_file_without_its_metadata_is_opaque(tmp_path):
    path = _save(_model(), tmp_path / "ckpt")
    (data,) = path.glob("*.distcp")
    blob = data.read_bytes()
    assert scan("x/__0_0.distcp", memoryview(blob), None).tensors() == []
    (path / ".metadata").unlink()
    sf = scan_path(data, data.name)
    assert sf.tensors() == [] and joined(sf) == blob


class _Boom:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("metadata", [
    pickle.dumps(_Boom()), pickle.dumps({"storage_data": {}}), b"not a pickle", b"",   # a global call (print), ...
    pickle.dumps([1, 2, 3]) * 3,
    b"\x80\x02" + b"(" * 200_000 + b"l" * 200_000 + b".",          # lists nested 200,000 deep
])
def test_hostile_metadata_leaves_the_data_opaque(tmp_path, metadata, capsys):
    path = _save(_model(), tmp_path / "ckpt")
    (data,) = path.glob("*.distcp")
    blob = data.read_bytes()
    sf = scan(data.name, memoryview(blob), metadata)
    assert sf.tensors() == [] and joined(sf) == blob
    assert "pickled code ran" not in capsys.readouterr().out


def test_metadata_that_does_not_fit_the_file_is_opaque(tmp_path):
    path = _save(_model(), tmp_path / "ckpt")
    (data,) = path.glob("*.distcp")
    blob = data.read_bytes()
    meta = (path / ".metadata").read_bytes()
    items = read_metadata(meta)
    assert {i[0] for i in items} >= {"embed.weight", "step"} and all(i[5] for i in items)
    cut = blob[: len(blob) // 2]                                    # items past the end
    assert scan(data.name, memoryview(cut), meta).tensors() == []
    assert scan("other.distcp", memoryview(blob), meta).tensors() == []   # names no item of this file


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[bytes, bytes]:
    path = _save({"w": torch.arange(64, dtype=torch.float32), "b": torch.ones(8)}, tmp_path_factory.mktemp("dcp"))
    (data,) = path.glob("*.distcp")
    return data.read_bytes(), (path / ".metadata").read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**damage(1 << 14, 4), which=st.sampled_from(["data", "metadata"]))
def test_damaged_saves_never_raise(saved, flips, cut, which):
    blob, meta = saved
    if which == "data":
        blob = damaged(blob, flips, cut)
    else:
        meta = damaged(meta, flips, cut)
    sf = scan("__0_0.distcp", memoryview(blob), meta)
    assert joined(sf) == blob
    for s in sf.tensors():
        assert s.nbytes == int(np.prod(s.tensor.shape)) * {"F32": 4}[s.tensor.dtype]
