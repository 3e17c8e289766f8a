"""GGUF files written by the `gguf` package's own writer: every tensor a span with its GGML type, quantized ones
chunked on block boundaries, so a fine-tuned or re-quantized model dedups what did not change; damaged or hostile
headers are opaque bytes that restore byte for byte, never an exception."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from ckstore.formats import scan_buffer
from ckstore.formats.base import BLOCKS, tensor_nbytes
from ckstore.formats.gguf import TYPES
from conftest import damage, damaged, joined, run_cli, two_versions

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import quantize  # noqa: E402


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in
            [("token_embd.weight", (64, 256)), ("blk.0.attn_q.weight", (256, 256)),
             ("blk.0.ffn_up.weight", (512, 256)), ("output_norm.weight", (256,))]}


def _write(path: Path, weights: dict[str, np.ndarray], kinds: dict[str, Q], name: str = "tiny",
           raw: dict[str, tuple[Q, np.ndarray]] | None = None) -> bytes:
    """A GGUF file from the `gguf` writer: each weight as F32, F16 or quantized by gguf's own quantizer; `raw`
    adds tensors given as already-quantized bytes (types gguf cannot quantize in Python)."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(2048)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"tok{i}" for i in range(300)])
    for key, arr in weights.items():
        kind = kinds.get(key, Q.F32)
        if kind == Q.F32:
            w.add_tensor(key, arr)
        elif kind == Q.F16:
            w.add_tensor(key, arr.astype(np.float16))
        else:
            q = quantize(arr, kind)
            w.add_tensor(key, q, raw_shape=q.shape, raw_dtype=kind)
    for key, (kind, q) in (raw or {}).items():
        w.add_tensor(key, q, raw_shape=q.shape, raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


KINDS = {"token_embd.weight": Q.F16, "blk.0.attn_q.weight": Q.Q8_0, "blk.0.ffn_up.weight": Q.Q4_0}


def test_the_block_table_matches_ggml():
    for number, name in TYPES.items():
        per, size = gguf.constants.GGML_QUANT_SIZES[Q(number)]
        if name in BLOCKS:
            assert BLOCKS[name] == (per, size), name
        else:
            assert per == 1 and tensor_nbytes(name, (3,)) == 3 * size, name
    assert set(BLOCKS) <= set(TYPES.values())


def test_tensors_have_their_ggml_types_and_the_bytes_gguf_reads(tmp_path):
    rng = np.random.default_rng(3)
    k_blocks = rng.integers(0, 256, (16, 2 * 144), dtype=np.uint8)   # 16 rows of two Q4_K blocks
    data = _write(tmp_path / "m.gguf", _weights(), KINDS, raw={"blk.0.k": (Q.Q4_K, k_blocks)})
    sf = scan_buffer("m.gguf", memoryview(data))
    assert joined(sf) == data
    got = {s.tensor.name: s for s in sf.tensors()}
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    assert set(got) == {t.name for t in reader.tensors}
    for t in reader.tensors:
        span = got[t.name]
        assert span.tensor.dtype == t.tensor_type.name
        assert span.tensor.shape == tuple(int(d) for d in t.shape[::-1])
        assert span.offset == t.data_offset and bytes(span.data) == t.data.tobytes()
    assert got["blk.0.k"].tensor.shape == (16, 512)


def test_a_fine_tuned_model_dedups_and_diffs_tensor_by_tensor(tmp_path):
    base = _weights()
    tuned = {**base, "blk.0.ffn_up.weight": base["blk.0.ffn_up.weight"] + 0.5}
    one = _write(tmp_path / "a.gguf", base, KINDS)
    two = _write(tmp_path / "b.gguf", tuned, KINDS)
    repo, a, b = two_versions(tmp_path, "model.gguf", one, two)
    diff = repo.diff(a.id, b.id).tensors
    assert [t["name"] for t in diff["changed"]] == ["blk.0.ffn_up.weight"]
    before, after = (gguf.quants.dequantize(quantize(w["blk.0.ffn_up.weight"], Q.Q4_0), Q.Q4_0) for w in (base, tuned))
    (change,) = diff["changed"]                                  # statistics over the decoded values
    assert change["comparable"] and change["changed"] == np.count_nonzero(before != after)
    assert change["l2_delta"] == pytest.approx(float(np.linalg.norm((after - before).astype(np.float64))), rel=1e-5)
    entry = next(t for t in repo.manifest(b.id).tensors if t.name == "blk.0.ffn_up.weight")
    assert entry.stats["mean"] == pytest.approx(float(after.astype(np.float64).mean()), rel=1e-5, abs=1e-7)
    assert set(diff["unchanged"]) == {"token_embd.weight", "blk.0.attn_q.weight", "output_norm.weight"}
    q4 = tensor_nbytes("Q4_0", (512, 256))
    assert 0 < repo.show(b.id).new_bytes < q4 + 4096              # at most the changed tensor and the header
    loaded = repo.load(b.id, names=["blk.0.ffn_up.weight"])["blk.0.ffn_up.weight"]
    assert loaded.dtype == np.uint8 and loaded.shape == (512, 256 // 32 * 18)
    want = gguf.quants.dequantize(quantize(tuned["blk.0.ffn_up.weight"], Q.Q4_0), Q.Q4_0)
    assert np.array_equal(gguf.quants.dequantize(loaded, Q.Q4_0), want)
    repo.close()


def test_requantizing_one_tensor_and_editing_metadata_store_only_those(tmp_path):
    base = _weights()
    one = _write(tmp_path / "a.gguf", base, KINDS)
    two = _write(tmp_path / "b.gguf", base, {**KINDS, "blk.0.attn_q.weight": Q.Q4_0}, name="tiny-requantized")
    repo, a, b = two_versions(tmp_path, "model.gguf", one, two)
    diff = repo.diff(a.id, b.id).tensors
    assert [t["name"] for t in diff["changed"]] == ["blk.0.attn_q.weight"]
    assert diff["changed"][0]["dtype"] == ["Q8_0", "Q4_0"]
    assert repo.show(b.id).new_bytes < tensor_nbytes("Q4_0", (256, 256)) + 4096
    repo.close()


def test_big_quantized_tensors_are_chunked_on_block_boundaries(tmp_path):
    rng = np.random.default_rng(5)
    big = {"w": rng.standard_normal((4096, 512)).astype(np.float32)}        # 2.2 MB of Q8_0: three 1 MiB chunks
    one = _write(tmp_path / "a.gguf", big, {"w": Q.Q8_0})
    changed = big["w"].copy()
    changed[-8:] += 1.0                                                       # the last rows only
    two = _write(tmp_path / "b.gguf", {"w": changed}, {"w": Q.Q8_0})
    repo, a, b = two_versions(tmp_path, "model.gguf", one, two)
    (entry,) = repo.manifest(b.id).tensors
    assert entry.dtype == "Q8_0" and entry.chunk_bytes % 34 == 0 and len(entry.chunks) == 3
    old = repo.manifest(a.id).tensors[0]
    assert [x == y for x, y in zip(old.chunks, entry.chunks)] == [True, True, False]
    assert repo.show(b.id).new_bytes < entry.nbytes // 2
    repo.close()


def test_show_lists_ggml_types(tmp_path, monkeypatch, capsys):
    (tmp_path / "ck").mkdir()
    _write(tmp_path / "ck" / "model.gguf", _weights(), KINDS)
    monkeypatch.chdir(tmp_path)
    assert run_cli(monkeypatch, capsys, "init")[0] == 0
    assert run_cli(monkeypatch, capsys, "commit", "ck", "-m", "gguf")[0] == 0
    code, out, _ = run_cli(monkeypatch, capsys, "show")
    assert code == 0
    for needle in ("blk.0.attn_q.weight", "Q8_0", "Q4_0", "F16", "512×256"):
        assert needle in out, needle
    tuned = {**_weights(), "blk.0.attn_q.weight": _weights()["blk.0.attn_q.weight"] * 2}
    _write(tmp_path / "ck" / "model.gguf", tuned, KINDS)
    assert run_cli(monkeypatch, capsys, "commit", "ck", "-m", "tuned")[0] == 0
    code, out, _ = run_cli(monkeypatch, capsys, "diff", "HEAD~1", "HEAD", "--json")
    (changed,) = json.loads(out)["tensors"]["changed"]
    assert changed["name"] == "blk.0.attn_q.weight" and changed["comparable"] and changed["cosine"] > 0.99
    code, out, _ = run_cli(monkeypatch, capsys, "diff", "HEAD~1", "HEAD", "--hist", "blk.0.attn_q.weight")
    assert code == 0 and "█" in out                            # Q8_0 values decoded: a histogram


def test_block_types_not_decoded_have_no_statistics(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(4)
    (tmp_path / "ck").mkdir()
    monkeypatch.chdir(tmp_path)
    assert run_cli(monkeypatch, capsys, "init")[0] == 0
    for i in range(2):
        raw = {"k": (Q.Q4_K, rng.integers(0, 256, (8, 144), dtype=np.uint8))}
        _write(tmp_path / "ck" / "model.gguf", {}, {}, raw=raw)
        assert run_cli(monkeypatch, capsys, "commit", "ck", "-m", f"v{i}")[0] == 0
    code, out, _ = run_cli(monkeypatch, capsys, "diff", "HEAD~1", "HEAD", "--json")
    (changed,) = json.loads(out)["tensors"]["changed"]
    assert changed["comparable"] is False and changed["note"] == "Q4_K blocks: no element statistics"
    code, out, _ = run_cli(monkeypatch, capsys, "diff", "HEAD~1", "HEAD", "--hist", "k")
    assert code == 0 and "no histogram" in out


# ------------------------------------------------------------------------------------------ hostile and damaged


def _string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def _file(tensors: list[tuple[bytes, list[int], int, int]], kv: bytes = b"", n_kv: int = 0, data: bytes = b"",
          version: int = 3, alignment: int = 32) -> bytes:
    """A GGUF file by hand: (name, dims innermost first, GGML type, offset) per tensor, raw kv pairs, data."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), n_kv) + kv
    for name, dims, kind, off in tensors:
        head += _string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        head += struct.pack("<IQ", kind, off)
    return head + b"\0" * (-len(head) % alignment) + data


def test_hand_written_file_reads():
    blob = _file([(b"a", [4], 0, 0), (b"b", [32, 2], 8, 32)], data=bytes(16) + bytes(16) + bytes(2 * 34))
    sf = scan_buffer("x.gguf", memoryview(blob))
    assert [(s.tensor.name, s.tensor.dtype, s.tensor.shape) for s in sf.tensors()] == [
        ("a", "F32", (4,)), ("b", "Q8_0", (2, 32))]
    assert joined(sf) == blob


def test_an_unknown_ggml_type_stays_opaque_and_the_rest_are_tensors():
    blob = _file([(b"a", [4], 0, 0), (b"odd", [8], 250, 16)], data=bytes(16) + bytes(64))
    sf = scan_buffer("x.gguf", memoryview(blob))
    assert [s.tensor.name for s in sf.tensors()] == ["a"] and joined(sf) == blob


@pytest.mark.parametrize("blob", [
    b"", b"GGUF", b"GGUF" + struct.pack("<I", 1) + bytes(16),                      # empty, cut, version 1
    b"GGUF" + struct.pack(">IQQ", 3, 1, 0),                                        # big endian: absurd counts
    _file([(b"a", [4], 0, 64)], data=bytes(16)),                                   # offset past the end
    _file([(b"a", [8], 0, 0), (b"b", [4], 0, 16)], data=bytes(32)),                # overlapping tensors
    _file([(b"a", [1 << 40, 1 << 40], 0, 0)], data=bytes(16)),                     # absurd shape
    _file([(b"a", [1 << 63], 0, 0)], data=bytes(16)),
    _file([(b"q", [33], 8, 0)], data=bytes(68)),                                   # not whole blocks
    _file([(b"a", [4], 0, 0), (b"a", [4], 0, 16)], data=bytes(32)),                # duplicate names
    _file([(b"\xff\xfe", [4], 0, 0)], data=bytes(16)),                             # name not UTF-8
    _file([(b"a", [4] * 9, 0, 0)], data=bytes(16)),                                # too many dims
    _file([], n_kv=1 << 60),                                                       # absurd kv count
    _file([], kv=_string(b"k") + struct.pack("<IQ", 8, 1 << 50), n_kv=1),          # string past the end
    _file([], kv=_string(b"k") + struct.pack("<I", 99), n_kv=1),                   # unknown value type
    _file([], kv=_string(b"k") + struct.pack("<IIQ", 9, 4, 1 << 40), n_kv=1),      # array past the end
    _file([], kv=_string(b"k") + (struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 9, 1)) * 6
          + struct.pack("<IQ", 4, 0), n_kv=1),                                     # arrays nested too deep
    _file([], kv=_string(b"general.alignment") + struct.pack("<II", 4, 24), n_kv=1),   # not a power of two
    _file([], kv=_string(b"general.alignment") + struct.pack("<IQ", 8, 0), n_kv=1),    # not a uint32
])
def test_hostile_headers_are_opaque(blob):
    sf = scan_buffer("bad.gguf", memoryview(blob))
    assert sf.tensors() == [] and joined(sf) == blob


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    small = {k: v[:8] for k, v in _weights().items()}
    return _write(tmp_path_factory.mktemp("gguf") / "m.gguf", small, KINDS)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**damage(1 << 15, 5))
def test_damaged_files_never_raise(model_bytes, flips, cut):
    blob = damaged(model_bytes, flips, cut)
    sf = scan_buffer("fuzz.gguf", memoryview(blob))
    assert joined(sf) == blob
    for span in sf.tensors():
        assert span.nbytes == tensor_nbytes(span.tensor.dtype, span.tensor.shape)
