"""ONNX models written by the `onnx` package: inline initializers become tensors (dedup and diff tensor by
tensor), the graph and external-data initializers stay opaque, and damaged or hostile bytes never raise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from ckstore.formats import scan_buffer, scan_path
from conftest import damage, damaged, joined, two_versions

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model(weights: dict[str, np.ndarray]) -> "onnx.ModelProto":
    nodes, x = [], "x"
    for i, name in enumerate(n for n in weights if n.endswith(".weight")):
        bias = name.replace(".weight", ".bias")
        nodes.append(helper.make_node("Gemm", [x, name, bias], [f"h{i}"], transB=1))
        x = f"h{i}"
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    width = next(iter(weights.values())).shape[1]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph)


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"fc1.weight": rng.standard_normal((32, 16)).astype(np.float32), "fc1.bias": np.zeros(32, np.float32),
            "fc2.weight": rng.standard_normal((8, 32)).astype(np.float16), "fc2.bias": np.ones(8, np.float16)}


def _saved(path: Path, weights: dict) -> bytes:
    onnx.save(_model(weights), str(path))
    return path.read_bytes()


def test_initializers_are_tensors(tmp_path):
    data = _saved(tmp_path / "m.onnx", _weights())
    sf = scan_buffer("m.onnx", memoryview(data))
    got = {s.tensor.name: (s.tensor.dtype, s.tensor.shape) for s in sf.tensors()}
    assert got == {"fc1.weight": ("F32", (32, 16)), "fc1.bias": ("F32", (32,)), "fc2.weight": ("F16", (8, 32)),
                   "fc2.bias": ("F16", (8,))}
    assert joined(sf) == data
    w = next(s for s in sf.tensors() if s.tensor.name == "fc1.weight")
    assert bytes(w.data) == _weights()["fc1.weight"].tobytes()


def test_two_exports_dedup_and_diff_tensor_by_tensor(tmp_path):
    a_w = _weights()
    b_w = {**a_w, "fc2.weight": (a_w["fc2.weight"] + 1).astype(np.float16)}
    one, two = _saved(tmp_path / "a.onnx", a_w), _saved(tmp_path / "b.onnx", b_w)
    repo, a, b = two_versions(tmp_path, "model.onnx", one, two)
    diff = repo.diff(a.id, b.id).tensors
    assert [t["name"] for t in diff["changed"]] == ["fc2.weight"] and "fc1.weight" in diff["unchanged"]
    assert repo.show(b.id).new_bytes < 4096
    repo.close()


def test_typed_lists_varint_ones_stay_opaque_and_external_models_hold_no_tensors(tmp_path):
    model = _model(_weights())
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    data = (tmp_path / "ext.onnx").read_bytes()
    sf = scan_buffer("ext.onnx", memoryview(data))
    assert sf.tensors() == [] and joined(sf) == data
    floats = helper.make_tensor("f", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])     # packed float_data
    doubles = helper.make_tensor("d", TensorProto.DOUBLE, [2], [0.5, 0.25])       # packed double_data
    ints = helper.make_tensor("i", TensorProto.INT32, [3], [1, 2, 3])             # int32_data: varints
    blob = helper.make_model(helper.make_graph([], "g", [], [], [floats, doubles, ints])).SerializeToString()
    sf = scan_buffer("typed.onnx", memoryview(blob))
    assert {s.tensor.name: bytes(s.data) for s in sf.tensors()} == {
        "f": np.array([1, 2, 3], "<f4").tobytes(), "d": np.array([0.5, 0.25], "<f8").tobytes()}
    assert joined(sf) == blob


def test_constant_nodes_and_subgraphs_are_tensors():
    """Weights held in Constant nodes, also inside an If's branches, named after their outputs (unique)."""
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    const = helper.make_node("Constant", [], ["w_const"], value=numpy_helper.from_array(w, ""))
    inner = helper.make_node("Constant", [], ["w_const"], value=numpy_helper.from_array(w * 2, ""))
    branch = helper.make_graph([inner], "then", [], [helper.make_tensor_value_info("w_const", TensorProto.FLOAT,
                                                                                  [3, 4])])
    other = helper.make_graph([helper.make_node("Constant", [], ["o"], value_float=1.0)], "else", [],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, [])])
    cond = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)
    graph = helper.make_graph([const, cond], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    blob = helper.make_model(graph).SerializeToString()
    sf = scan_buffer("const.onnx", memoryview(blob))
    got = {s.tensor.name: bytes(s.data) for s in sf.tensors()}
    assert got == {"w_const": w.tobytes(), "w_const#2": (w * 2).tobytes()}
    assert joined(sf) == blob


def test_subgraphs_nested_too_deep_are_opaque():
    graph = helper.make_graph([helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(
        np.ones(4, np.float32), ""))], "leaf", [], [])
    for _ in range(20):
        graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=graph,
                                                    else_branch=helper.make_graph([], "e", [], []))], "g", [], [])
    blob = helper.make_model(graph).SerializeToString()
    sf = scan_buffer("deep.onnx", memoryview(blob))
    assert sf.tensors() == [] and joined(sf) == blob


def _external(path: Path, weights: dict, location: str = "model.onnx.data") -> Path:
    onnx.save(_model(weights), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=location, size_threshold=0)
    return path.parent / location


def test_external_data_files_are_tensors(tmp_path):
    data = _external(tmp_path / "model.onnx", _weights())
    sf = scan_path(data, data.name)
    got = {s.tensor.name: (s.tensor.dtype, s.tensor.shape) for s in sf.tensors()}
    assert got == {"fc1.weight": ("F32", (32, 16)), "fc1.bias": ("F32", (32,)), "fc2.weight": ("F16", (8, 32)),
                   "fc2.bias": ("F16", (8,))}
    assert joined(sf) == data.read_bytes()
    for s in sf.tensors():
        assert bytes(s.data) == _weights()[s.tensor.name].tobytes()
    (tmp_path / "model.onnx").unlink()                            # no model beside it: opaque bytes
    assert scan_path(data, data.name).tensors() == []


def test_one_external_file_per_initializer(tmp_path):
    onnx.save(_model(_weights()), str(tmp_path / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=False, size_threshold=0)
    found = {}
    for f in sorted(tmp_path.iterdir()):
        if f.name != "model.onnx":
            sf = scan_path(f, f.name)
            assert joined(sf) == f.read_bytes()
            found.update({s.tensor.name: bytes(s.data) for s in sf.tensors()})
    assert found == {k: v.tobytes() for k, v in _weights().items()}


def test_two_exports_with_external_data_dedup_and_diff(tmp_path):
    import ckstore
    a_w = _weights()
    b_w = {**a_w, "fc1.weight": a_w["fc1.weight"] * 2}
    repo = ckstore.Repo.init(tmp_path / "repo")
    ids = []
    for i, w in enumerate((a_w, b_w)):
        (tmp_path / f"v{i}").mkdir()
        _external(tmp_path / f"v{i}" / "model.onnx", w)
        ids.append(repo.commit(tmp_path / f"v{i}", f"v{i}", capture_env=False).id)
    diff = repo.diff(*ids).tensors
    assert [t["name"] for t in diff["changed"]] == ["fc1.weight"]
    assert repo.show(ids[1]).new_bytes < 32 * 16 * 4 + 2048
    repo.checkout(ids[1], tmp_path / "out")
    for f in (tmp_path / "v1").iterdir():
        assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes()
    repo.close()


def test_external_data_that_does_not_fit_stays_opaque(tmp_path):
    data = _external(tmp_path / "model.onnx", _weights())
    blob = data.read_bytes()
    data.write_bytes(blob[: len(blob) // 2])                      # the model places tensors past its end
    assert scan_path(data, data.name).tensors() == []
    (tmp_path / "sub").mkdir()
    good = _external(tmp_path / "sub" / "model.onnx", _weights())
    (tmp_path / "sub" / "other.data").write_bytes(good.read_bytes())   # the same bytes, a name no model gives
    assert scan_path(tmp_path / "sub" / "other.data", "other.data").tensors() == []
    assert len(scan_path(good, good.name).tensors()) == 4


@pytest.mark.parametrize("blob", [b"", b"\x3a\xff\xff\xff\xff\x0f", b"\x3a\x05\x2a\x10abc", b"\x0b\x00",
                                  b"\x80" * 20, b"not an onnx model at all"])
def test_hostile_bytes_are_opaque(blob):
    sf = scan_buffer("bad.onnx", memoryview(blob))
    assert sf.tensors() == [] and joined(sf) == blob


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    return _saved(tmp_path_factory.mktemp("onnx") / "m.onnx", _weights())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**damage(1 << 16, 5))
def test_damaged_models_never_raise(model_bytes, flips, cut):
    blob = damaged(model_bytes, flips, cut)
    sf = scan_buffer("fuzz.onnx", memoryview(blob))
    assert joined(sf) == blob


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**damage(1 << 10, 4))
def test_damaged_models_beside_a_data_file_never_raise(tmp_path_factory, flips, cut):
    d = tmp_path_factory.mktemp("ext")
    data = _external(d / "model.onnx", _weights())
    (d / "model.onnx").write_bytes(damaged((d / "model.onnx").read_bytes(), flips, cut))
    sf = scan_path(data, data.name)
    assert joined(sf) == data.read_bytes()
