"""Format readers: valid files round trip into spans, bad files raise MalformedCheckpoint and nothing else.

Default tier keeps hypothesis at <= 300 examples per test; the `soak` variants run 10^5 examples and are
skipped unless CKSTORE_SOAK=1.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy as stnp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckstore.errors import MalformedCheckpoint, UsageError
from ckstore.formats import DTYPES, ScannedFile, scan_buffer, scan_path, walk_source
from ckstore.formats import safetensors as ck_st

from conftest import SOAK, soak, skip_unless_soak  # noqa: E402,F401
FAST = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SOAK_SETTINGS = settings(max_examples=100_000, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# safetensors name -> the dtype string the official `safetensors.serialize` writer takes.
OFFICIAL_DTYPE = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16", "U32": "uint32", "I32": "int32",
    "U64": "uint64", "I64": "int64", "F16": "float16", "F32": "float32", "F64": "float64", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu", "C64": "complex64",
}
# dtypes safetensors.numpy.save_file / load_file handle (numpy itself has no float8 types).
NUMPY_WRITABLE = [k for k in DTYPES if not k.startswith("F8_")]
FLOATS = {"F16", "F32", "F64", "BF16", "F8_E4M3", "F8_E5M2"}


# ---------------------------------------------------------------------------------------------------- helpers

def check_cover(sf: ScannedFile, data: bytes, rel: str | None = None) -> None:
    """Spans are in order, contiguous, cover `data` exactly, and tensor spans are consistent with their info."""
    assert isinstance(sf, ScannedFile)
    if rel is not None:
        assert sf.path == rel
    assert sf.size == len(data)
    pos = 0
    parts = []
    for span in sf.spans:
        assert span.offset == pos, (span.offset, pos)
        chunk = bytes(span.data)
        assert span.nbytes == len(chunk)
        parts.append(chunk)
        pos += len(chunk)
        if span.tensor is not None:
            info = span.tensor
            assert info.dtype in DTYPES
            assert all(type(d) is int and d >= 0 for d in info.shape)
            assert int(np.prod(info.shape, dtype=object)) * DTYPES[info.dtype].itemsize == span.nbytes
        else:
            assert span.nbytes > 0, "opaque spans are never empty"
    assert pos == len(data)
    assert b"".join(parts) == data


def scan_file(path: Path, rel: str | None = None) -> ScannedFile:
    rel = rel or path.name
    sf = scan_path(path, rel)
    check_cover(sf, path.read_bytes(), rel)
    return sf


def expect_malformed(fn, rel: str) -> MalformedCheckpoint:
    with pytest.raises(MalformedCheckpoint) as ei:
        fn()
    exc = ei.value
    assert type(exc) is MalformedCheckpoint
    assert exc.reason and exc.reason.strip()
    assert exc.path == rel
    assert rel in str(exc)
    return exc


def malformed_buf(rel: str, data: bytes) -> MalformedCheckpoint:
    return expect_malformed(lambda: scan_buffer(rel, memoryview(data)), rel)


def malformed_file(tmp_path: Path, name: str, data: bytes) -> MalformedCheckpoint:
    p = tmp_path / name
    p.write_bytes(data)
    return expect_malformed(lambda: scan_path(p, name), name)


def sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random values of `dtype` (raw random bits for numbers, so NaN payloads and subnormals show up)."""
    rng = np.random.default_rng(seed)
    dt = DTYPES[dtype]
    n = int(np.prod(shape, dtype=object))
    if dtype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    raw = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8).tobytes()
    return np.frombuffer(raw, dtype=dt).reshape(shape).copy()


def official_bytes(tensors: dict[str, np.ndarray], metadata: dict | None = None) -> bytes:
    """A safetensors file written by the official writer from raw bytes (works for every dtype, float8 too)."""
    keep = {k: np.array(v, order="C", copy=True) for k, v in tensors.items()}  # ascontiguousarray makes 0-d 1-d
    specs = {}
    for k, a in keep.items():
        name = next(n for n, dt in DTYPES.items() if dt == a.dtype)
        specs[k] = safetensors.TensorSpec(dtype=OFFICIAL_DTYPE[name], shape=list(a.shape),
                                          data_ptr=a.ctypes.data, data_len=a.nbytes)
    out = bytes(safetensors.serialize(specs, metadata=metadata))
    del keep
    return out


def craft(header, data: bytes = b"", *, pad: bool = True) -> bytes:
    """A safetensors file from a header (object → JSON, or raw bytes) and a data section."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def entry(dtype="F32", shape=(2,), offs=(0, 8)):
    return {"dtype": dtype, "shape": list(shape) if isinstance(shape, tuple) else shape,
            "data_offsets": list(offs) if isinstance(offs, tuple) else offs}


def assert_tensors(sf: ScannedFile, tensors: dict[str, np.ndarray], names: dict[str, str] | None = None) -> None:
    got = {s.tensor.name: s for s in sf.tensors()}
    assert set(got) == set(tensors)
    for k, a in tensors.items():
        span = got[k]
        assert DTYPES[span.tensor.dtype] == a.dtype, (k, span.tensor.dtype, a.dtype)
        if names:
            assert span.tensor.dtype == names[k]
        assert span.tensor.shape == a.shape
        assert bytes(span.data) == np.ascontiguousarray(a).tobytes()


# ---------------------------------------------------------------------------------- 1. valid safetensors

@pytest.mark.parametrize("dtype", NUMPY_WRITABLE)
def test_safetensors_numpy_writer_round_trip(tmp_path, dtype):
    tensors = {
        "w": sample(dtype, (3, 5), 1),
        "scalar": sample(dtype, (), 2),
        "empty": sample(dtype, (0,), 3),
        "empty2": sample(dtype, (2, 0, 3), 4),
        "vec": sample(dtype, (7,), 5),
    }
    p = tmp_path / "m.safetensors"
    stnp.save_file(tensors, str(p))
    sf = scan_file(p)
    assert_tensors(sf, tensors, {k: dtype for k in tensors})


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_safetensors_official_serialize_round_trip(tmp_path, dtype):
    tensors = {"a": sample(dtype, (4, 3), 7), "b": sample(dtype, (), 8), "c": sample(dtype, (0,), 9),
               "d": sample(dtype, (1, 1, 5), 10)}
    p = tmp_path / "x.safetensors"
    p.write_bytes(official_bytes(tensors, {"format": "np"}))
    sf = scan_file(p)
    assert_tensors(sf, tensors, {k: dtype for k in tensors})


def test_dtype_table_matches_official_names():
    # every official name we map to must be accepted by the official writer and come back as our key
    for name in DTYPES:
        a = np.zeros(2, DTYPES[name])
        raw = official_bytes({"t": a})
        (n,) = struct.unpack("<Q", raw[:8])
        assert json.loads(raw[8:8 + n])["t"]["dtype"] == name


@pytest.mark.parametrize("dtype", sorted(FLOATS))
def test_safetensors_special_float_values_bit_exact(tmp_path, dtype):
    vals = np.array([np.nan, -np.nan, 0.0, -0.0, np.inf, -np.inf, 1.0, -1.5, 1e-30], dtype=np.float64)
    with np.errstate(all="ignore"):
        a = vals.astype(DTYPES[dtype])
    # odd bit patterns (NaN payloads, subnormals) must come back bit for bit
    k = DTYPES[dtype].itemsize
    odd = np.frombuffer(b"\x01" + b"\xff" * (k - 1) + b"\x01" + b"\x00" * (k - 1), dtype=DTYPES[dtype])
    a = np.concatenate([a, odd])
    p = tmp_path / "s.safetensors"
    p.write_bytes(official_bytes({"v": a}))
    sf = scan_file(p)
    (span,) = sf.tensors()
    assert bytes(span.data) == a.tobytes()
    back = np.frombuffer(span.data, dtype=DTYPES[span.tensor.dtype])
    assert np.array_equal(back, a, equal_nan=True)
    assert np.array_equal(np.signbit(back.astype(np.float64)), np.signbit(a.astype(np.float64)))


def test_safetensors_many_tiny_tensors(tmp_path):
    tensors = {f"layer.{i:05d}": np.array([i % 256], dtype=np.uint8) if i % 3 else np.array(float(i), np.float32)
               for i in range(10_000)}
    p = tmp_path / "many.safetensors"
    stnp.save_file(tensors, str(p))
    sf = scan_file(p)
    assert len(sf.tensors()) == 10_000
    assert_tensors(sf, tensors)


def test_safetensors_metadata_is_not_a_tensor(tmp_path):
    p = tmp_path / "meta.safetensors"
    meta = {"format": "pt", "note": "ünïcode ✓", "empty": ""}
    stnp.save_file({"x": np.arange(6, dtype=np.float32)}, str(p), metadata=meta)
    sf = scan_file(p)
    assert [s.tensor.name for s in sf.tensors()] == ["x"]
    # metadata only, no tensors at all
    p2 = tmp_path / "only-meta.safetensors"
    p2.write_bytes(craft({"__metadata__": {"a": "b"}}))
    sf2 = scan_file(p2)
    assert sf2.tensors() == []


def test_safetensors_empty_header_object_and_gaps(tmp_path):
    p = tmp_path / "e.safetensors"
    p.write_bytes(craft({}))
    assert scan_file(p).tensors() == []
    # a gap between tensors and trailing bytes are opaque spans; header order need not be data order
    data = bytes(range(40))
    hdr = {"b": entry("U8", (4,), (20, 24)), "a": entry("U8", (4,), (4, 8)), "z": entry("U8", (0,), (8, 8))}
    p.write_bytes(craft(hdr, data))
    sf = scan_file(p)
    start = len(p.read_bytes()) - len(data)
    spans = {s.tensor.name: s for s in sf.tensors()}
    assert spans["a"].offset == start + 4 and bytes(spans["a"].data) == data[4:8]
    assert spans["b"].offset == start + 20 and bytes(spans["b"].data) == data[20:24]
    assert spans["z"].nbytes == 0


def test_safetensors_non_ascii_names(tmp_path):
    tensors = {"模型.weight": np.ones(3, np.float16), "a/b c\n\"q\"": np.zeros((), np.int64)}
    p = tmp_path / "names.safetensors"
    stnp.save_file(tensors, str(p))
    assert_tensors(scan_file(p), tensors)


@pytest.mark.parametrize("with_meta", [False, True])
def test_build_header_is_aligned_and_official_reader_loads_it(tmp_path, with_meta):
    tensors = {
        "f32": sample("F32", (3, 4), 1), "f16": sample("F16", (5,), 2), "bf16": sample("BF16", (2, 3), 3),
        "u8": sample("U8", (3,), 4), "i64": sample("I64", (), 5), "b": sample("BOOL", (7,), 6),
        "empty": sample("F64", (0, 2), 7), "c": sample("C64", (2,), 8), "odd": sample("I8", (1,), 9),
    }
    order = list(tensors)
    spec = [(k, next(n for n, dt in DTYPES.items() if dt == tensors[k].dtype), tensors[k].shape, tensors[k].nbytes)
            for k in order]
    meta = {"format": "np", "step": "12"} if with_meta else None
    header = ck_st.build_header(spec, meta)
    assert len(header) % 8 == 0
    (n,) = struct.unpack("<Q", header[:8])
    assert n == len(header) - 8
    data = header + b"".join(tensors[k].tobytes() for k in order)
    p = tmp_path / "ours.safetensors"
    p.write_bytes(data)

    loaded = stnp.load_file(str(p))
    assert set(loaded) == set(tensors)
    for k, a in tensors.items():
        assert loaded[k].dtype == a.dtype and loaded[k].shape == a.shape
        assert loaded[k].tobytes() == a.tobytes()
    with safetensors.safe_open(str(p), framework="np") as f:
        assert f.metadata() == meta
    # and our own reader agrees
    assert_tensors(scan_file(p), tensors)


def test_build_header_float8_readable_by_official_deserialize():
    tensors = {k: sample(k, (3,), 1) for k in ("F8_E4M3", "F8_E5M2", "F8_E8M0")}
    spec = [(k, k, (3,), 3) for k in tensors]
    raw = ck_st.build_header(spec) + b"".join(a.tobytes() for a in tensors.values())
    assert len(ck_st.build_header(spec)) % 8 == 0
    out = dict(safetensors.deserialize(raw))
    for k, a in tensors.items():
        assert out[k]["dtype"] in (k, OFFICIAL_DTYPE[k])
        assert out[k]["shape"] == [3]
        assert bytes(out[k]["data"]) == a.tobytes()


def test_scan_path_errors_name_the_file(tmp_path):
    expect_malformed(lambda: scan_path(tmp_path / "missing.safetensors", "missing.safetensors"),
                     "missing.safetensors")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    expect_malformed(lambda: scan_path(empty, "sub/empty.safetensors"), "sub/empty.safetensors")


def test_unknown_extensions_are_opaque(tmp_path):
    # (.pt/.bin/.ckpt zip archives belong to the torch reader and are tested elsewhere)
    for name, data in [("x.txt", b"hello"), ("y.bin", b"\x00" * 9), ("z.zip", b"PK\x03\x04junk"), ("e.json", b"")]:
        p = tmp_path / name
        p.write_bytes(data)
        sf = scan_file(p)
        assert sf.tensors() == []


# ------------------------------------------------------------------------------ 2. malformed safetensors (T8)

@pytest.fixture(scope="module")
def small_st() -> bytes:
    return official_bytes({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2, 3], np.int16)},
                          {"k": "v"})


def test_every_truncation_of_safetensors(small_st):
    rel = "t/trunc.safetensors"
    for cut in range(len(small_st)):
        malformed_buf(rel, small_st[:cut])
    check_cover(scan_buffer(rel, memoryview(small_st)), small_st, rel)


def test_every_truncation_via_scan_path(tmp_path, small_st):
    for cut in range(0, len(small_st), 7):
        malformed_file(tmp_path, f"cut{cut}.safetensors", small_st[:cut])


@pytest.mark.parametrize("n", [0, 1, 7, 10**6, 2**63, 2**64 - 1])
def test_bad_header_length(small_st, n):
    data = struct.pack("<Q", n) + small_st[8:]
    malformed_buf("h.safetensors", data)


def test_header_length_one_past_file(small_st):
    data = struct.pack("<Q", len(small_st) - 7) + small_st[8:]
    malformed_buf("h.safetensors", data)


@pytest.mark.parametrize("header", [
    b'{"\xff\xfe": 1}',                        # not UTF-8
    b'\xef\xbb\xbf{}',                           # a BOM is not JSON
    b'[]', b'[1, 2]', b'"str"', b'123', b'null', b'true',  # JSON but not an object
    b'{', b'{"a": }', b'{} {}', b'',             # not JSON
    b'{"a": 1, "a": 2}',                         # duplicate keys
    b'{"__metadata__": {"x": "1", "x": "2"}}',   # duplicate keys, nested
    b'{"a": {"dtype": "F32", "dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}',
    b"\x00" * 16,
    b'{"a": NaN}',
    b'{"a": ' + b"1" * 5000 + b"}",              # beyond int digit limit
])
def test_bad_header_text(header):
    malformed_buf("bad.safetensors", craft(header, b"\x00" * 16))


@pytest.mark.parametrize("text", [b"[" * 100_000, b"{\"a\":" * 100_000, b"[" * 50_000 + b"]" * 50_000,
                                  b'{"__metadata__": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"])
def test_deeply_nested_json_is_malformed_not_recursion_error(text):
    malformed_buf("deep.safetensors", craft(text))


@pytest.mark.parametrize("header,data", [
    ({"a": entry("F32", (2,), (0, 8)), "b": entry("F32", (2,), (4, 12))}, b"\0" * 12),   # overlap
    ({"a": entry("F32", (2,), (0, 8)), "b": entry("F32", (2,), (0, 8))}, b"\0" * 8),     # same range twice
    ({"a": entry("U8", (4,), (0, 4)), "z": entry("U8", (0,), (2, 2))}, b"\0" * 4),       # empty inside other
    ({"a": entry("F32", (2,), (0, 8))}, b"\0" * 7),                                       # past the end
    ({"a": entry("F32", (2,), (8, 16))}, b"\0" * 8),                                      # out of range
    ({"a": entry("F32", (0,), (9, 9))}, b"\0" * 8),                                       # empty, out of range
    ({"a": entry("F32", (2,), (-8, 0))}, b"\0" * 8),                                      # negative
    ({"a": entry("F32", (-2,), (8, 0))}, b"\0" * 8),                                      # begin > end
    ({"a": entry("F32", (2,), (8, 0))}, b"\0" * 8),                                       # begin > end
    ({"a": entry("F32", (3,), (0, 8))}, b"\0" * 12),                                      # shape×dtype mismatch
    ({"a": entry("F64", (2,), (0, 8))}, b"\0" * 8),                                       # shape×dtype mismatch
    ({"a": entry("F32", (), (0, 0))}, b"\0" * 8),                                         # 0-d needs 1 element
    ({"a": entry("F4", (2,), (0, 8))}, b"\0" * 8),                                        # unknown dtype
    ({"a": entry("f32", (2,), (0, 8))}, b"\0" * 8),                                       # case matters
    ({"a": entry("float32", (2,), (0, 8))}, b"\0" * 8),
    ({"a": entry(None, (2,), (0, 8))}, b"\0" * 8),
    ({"a": entry(4, (2,), (0, 8))}, b"\0" * 8),
    ({"a": entry(["F32"], (2,), (0, 8))}, b"\0" * 8),                                     # unhashable dtype
    ({"a": entry({"F32": 1}, (2,), (0, 8))}, b"\0" * 8),
    ({"a": entry("F32", [-1, -2], (0, 8))}, b"\0" * 8),                                   # negative dims
    ({"a": entry("F32", [2.0], (0, 8))}, b"\0" * 8),                                      # float dim
    ({"a": entry("F32", ["2"], (0, 8))}, b"\0" * 8),                                      # string dim
    ({"a": entry("F32", [True, True], (0, 8))}, b"\0" * 8),                               # bool dims
    ({"a": entry("F32", [[2]], (0, 8))}, b"\0" * 8),
    ({"a": entry("F32", [None], (0, 8))}, b"\0" * 8),
    ({"a": entry("F32", 2, (0, 8))}, b"\0" * 8),                                          # shape not a list
    ({"a": entry("F32", {"0": 2}, (0, 8))}, b"\0" * 8),
    ({"a": entry("F32", "2", (0, 8))}, b"\0" * 8),
    ({"a": entry("U8", (1,), [False, True])}, b"\0" * 8),                                # bool offsets
    ({"a": entry("U8", (1,), [0, True])}, b"\0" * 8),
    ({"a": entry("F32", (2,), [0.0, 8.0])}, b"\0" * 8),                                  # float offsets
    ({"a": entry("F32", (2,), ["0", "8"])}, b"\0" * 8),
    ({"a": entry("F32", (2,), [0])}, b"\0" * 8),                                          # wrong arity
    ({"a": entry("F32", (2,), [0, 8, 8])}, b"\0" * 8),
    ({"a": entry("F32", (2,), {"0": 0, "1": 8})}, b"\0" * 8),
    ({"a": entry("F32", (2,), None)}, b"\0" * 8),
    ({"a": entry("F32", (2,), [0, 2**70])}, b"\0" * 8),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8),                                   # missing key
    ({"a": {"dtype": "F32", "data_offsets": [0, 8]}}, b"\0" * 8),
    ({"a": {"shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
    ({"a": {**entry("F32", (2,), (0, 8)), "extra": 1}}, b"\0" * 8),                       # extra key
    ({"a": {}}, b"\0" * 8),
    ({"a": None}, b"\0" * 8),                                                             # entry not an object
    ({"a": [1, 2]}, b"\0" * 8),
    ({"a": "F32"}, b"\0" * 8),
    ({"__metadata__": ["a"]}, b""),                                                       # bad metadata
    ({"__metadata__": {"a": 1}}, b""),
    ({"__metadata__": {"a": None}}, b""),
    ({"__metadata__": {"a": {"b": "c"}}}, b""),
    ({"__metadata__": "x"}, b""),
])
def test_bad_header_entries(tmp_path, header, data):
    malformed_buf("sub/bad.safetensors", craft(header, data))
    malformed_file(tmp_path, "bad.safetensors", craft(header, data))


def test_huge_shape_does_not_allocate():
    hdr = {"a": entry("F64", [2**62, 2**62, 2**62], (0, 8))}
    malformed_buf("huge.safetensors", craft(hdr, b"\0" * 8))


# -------------------------------------------------------------------------------------------- 3. npy / npz

NPY_DTYPES = ["<f4", "<f2", "<f8", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "|b1", "<c8"]


@pytest.mark.parametrize("descr", NPY_DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (5,), (2, 3, 4)])
def test_npy_round_trip(tmp_path, descr, shape):
    dt = np.dtype(descr)
    name = next(n for n, d in DTYPES.items() if d == dt)
    a = sample(name, shape, 3)
    p = tmp_path / "arr.npy"
    np.save(p, a)
    sf = scan_file(p, "dir/arr.npy")
    (span,) = sf.tensors()
    assert span.tensor.name == "arr"
    assert span.tensor.dtype == name
    assert span.tensor.shape == shape
    assert bytes(span.data) == a.tobytes()
    assert span.offset + span.nbytes == sf.size
    assert span.offset % 16 == 0 or span.offset % 64 == 0  # numpy aligns the data start


@pytest.mark.parametrize("dt", [ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn])
def test_npy_ml_dtypes_saved_by_numpy_stay_opaque(tmp_path, dt):
    # numpy writes these as raw void ('<V2' / '<V1'): nothing says they are bfloat16, so they must stay opaque
    p = tmp_path / "bf.npy"
    np.save(p, np.ones(4, dt))
    header = p.read_bytes()[:128]
    if b"'<V" not in header and b"'|V" not in header:
        pytest.skip(f"numpy now writes a real descr for {dt}: {header!r}")
    sf = scan_file(p)
    assert sf.tensors() == []


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_header_versions(tmp_path, version):
    a = np.arange(10, dtype=np.int32)
    p = tmp_path / "v.npy"
    with open(p, "wb") as f:
        np.lib.format.write_array(f, a, version=version)
    (span,) = scan_file(p).tensors()
    assert bytes(span.data) == a.tobytes() and span.tensor.shape == (10,)


def test_npy_fortran_order_is_opaque(tmp_path):
    a = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    p = tmp_path / "f.npy"
    np.save(p, a)
    assert b"'fortran_order': True" in p.read_bytes()[:128]
    sf = scan_file(p)
    assert sf.tensors() == [] and len(sf.spans) == 1


@pytest.mark.parametrize("descr", [">f4", ">i8", ">f2", ">c8", ">u2"])
def test_npy_big_endian_is_opaque(tmp_path, descr):
    p = tmp_path / "be.npy"
    np.save(p, np.arange(5).astype(descr))
    sf = scan_file(p)
    assert sf.tensors() == [] and len(sf.spans) == 1


@pytest.mark.parametrize("descr", ["<M8[s]", "<U3", "|S4", "<f16" if np.dtype("<f16").itemsize == 16 else "<f8"])
def test_npy_unsupported_dtypes_are_opaque(tmp_path, descr):
    p = tmp_path / "u.npy"
    np.save(p, np.zeros(3, dtype=descr))
    sf = scan_file(p)
    if descr == "<f8":
        assert len(sf.tensors()) == 1
    else:
        assert sf.tensors() == []


def test_npy_structured_is_opaque(tmp_path):
    p = tmp_path / "rec.npy"
    np.save(p, np.zeros(3, dtype=[("a", "<f4"), ("b", "<i2")]))
    assert scan_file(p).tensors() == []


class _Boom:
    """Unpickling this creates the file at `path`: proof that a reader ran pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_npy_object_array_is_opaque_and_never_unpickled(tmp_path):
    sentinel = tmp_path / "PWNED"
    a = np.array([_Boom(str(sentinel)), 1, "x"], dtype=object)
    p = tmp_path / "obj.npy"
    np.save(p, a, allow_pickle=True)
    sf = scan_file(p)
    assert sf.tensors() == []
    assert not sentinel.exists()
    # the payload is live: numpy's own loader with allow_pickle does run it
    np.load(p, allow_pickle=True)
    assert sentinel.exists()


def test_npz_object_member_is_opaque_and_never_unpickled(tmp_path):
    sentinel = tmp_path / "PWNED_NPZ"
    p = tmp_path / "obj.npz"
    np.savez(p, obj=np.array([_Boom(str(sentinel))], dtype=object), w=np.arange(4, dtype=np.float32))
    sf = scan_file(p)
    assert [s.tensor.name for s in sf.tensors()] == ["w"]
    assert not sentinel.exists()
    with np.load(p, allow_pickle=True) as z:
        z["obj"]
    assert sentinel.exists()


def test_npz_stored_members_are_tensors(tmp_path):
    arrays = {
        "weight": sample("F32", (4, 5), 1), "bias": sample("F16", (5,), 2), "step": np.array(7, np.int64),
        "empty": np.zeros((0, 3), np.float64), "mask": sample("BOOL", (9,), 3), "c": sample("C64", (2,), 4),
    }
    p = tmp_path / "ck.npz"
    np.savez(p, **arrays)
    sf = scan_file(p)
    assert_tensors(sf, arrays)
    with zipfile.ZipFile(p) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())


def test_npz_mixed_members(tmp_path):
    arrays = {"ok": np.arange(6, dtype=np.int16), "fort": np.asfortranarray(np.ones((2, 3), np.float32)),
              "be": np.arange(3, dtype=">f8"), "rec": np.zeros(2, dtype=[("a", "<i4")])}
    p = tmp_path / "mix.npz"
    np.savez(p, **arrays)
    sf = scan_file(p)
    assert [s.tensor.name for s in sf.tensors()] == ["ok"]


def test_npz_only_opaque_members_is_one_span(tmp_path):
    p = tmp_path / "be.npz"
    np.savez(p, be=np.arange(3, dtype=">f8"))
    sf = scan_file(p)
    assert sf.tensors() == [] and len(sf.spans) == 1


def test_npz_compressed_is_opaque(tmp_path):
    p = tmp_path / "c.npz"
    np.savez_compressed(p, a=np.arange(100, dtype=np.float32), b=np.ones(3, np.int8))
    sf = scan_file(p)
    assert sf.tensors() == [] and len(sf.spans) == 1


def test_npz_non_npy_stored_members_ignored(tmp_path):
    p = tmp_path / "odd.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("README.txt", b"not an array")
        with zf.open("x.npy", "w") as f:
            np.lib.format.write_array(f, np.arange(4, dtype=np.uint8))
    sf = scan_file(p)
    assert [s.tensor.name for s in sf.tensors()] == ["x"]


def test_npz_member_with_bad_npy_is_malformed(tmp_path):
    p = tmp_path / "bad.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("x.npy", b"definitely not npy")
    expect_malformed(lambda: scan_path(p, "bad.npz"), "bad.npz")


def test_npz_member_shape_mismatch_is_malformed(tmp_path):
    p = tmp_path / "mm.npz"
    npy = _npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", b"\0" * 8)
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("x.npy", npy)
    expect_malformed(lambda: scan_path(p, "mm.npz"), "mm.npz")


def test_every_truncation_of_npy():
    buf = _bytes_of(lambda f: np.save(f, np.arange(12, dtype=np.float32).reshape(3, 4)))
    for cut in range(len(buf)):
        malformed_buf("t.npy", buf[:cut])
    check_cover(scan_buffer("t.npy", memoryview(buf)), buf)


@pytest.mark.parametrize("compressed", [False, True])
def test_every_truncation_of_npz(compressed):
    save = np.savez_compressed if compressed else np.savez
    buf = _bytes_of(lambda f: save(f, a=np.arange(5, dtype=np.float32), b=np.ones((2, 2), np.int8)))
    for cut in range(len(buf)):
        malformed_buf("t.npz", buf[:cut])
    check_cover(scan_buffer("t.npz", memoryview(buf)), buf)


def _bytes_of(write) -> bytes:
    import io

    f = io.BytesIO()
    write(f)
    return f.getvalue()


def _npy_bytes(header: str | bytes, data: bytes = b"", version: int = 1) -> bytes:
    text = header.encode("latin1") if isinstance(header, str) else header
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(text)) + text + data


@pytest.mark.parametrize("data", [
    b"", b"\x93NUMP", b"\x93NUMPY", b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00\x05\x00",
    b"NOTNUMPY\x01\x00\x00\x00",
    b"\x93NUMPY\x04\x00\x00\x00\x00\x00",        # unknown version
    b"\x93NUMPY\x00\x00\x00\x00",
    b"\x93NUMPY\x01\x00\xff\xff{}",               # header length past the end
    b"\x93NUMPY\x02\x00\xff\xff\xff\xff{}",
    _npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", b"\0" * 7),   # short data
    _npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", b"\0" * 9),   # long data
    _npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': [2], }", b"\0" * 8),    # list shape
    _npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': 2, }", b"\0" * 8),
    _npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", b"\0" * 8),
    _npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (True,), }", b"\0" * 4),
    _npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,), }", b"\0" * 8),
    _npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': ('2',), }", b"\0" * 8),
    _npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (None,), }", b"\0" * 8),
    _npy_bytes("{'descr': '<f4', 'fortran_order': False, }", b"\0" * 8),                   # missing key
    _npy_bytes("{'descr': '<f4', 'shape': (2,), }", b"\0" * 8),
    _npy_bytes("{'fortran_order': False, 'shape': (2,), }", b"\0" * 8),
    _npy_bytes("['descr', 'fortran_order', 'shape']", b"\0" * 8),                          # not a dict
    _npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), ", b"\0" * 8),     # syntax
    _npy_bytes("__import__('os').system('touch /tmp/ckstore-pwned')", b""),               # code
    _npy_bytes("{[]: 1}", b""),                                                            # unhashable key
    _npy_bytes("{{}: 1}", b""),
    _npy_bytes("{{1}, 2}", b""),                                                           # unhashable in set
    _npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), [1]: 2}", b"\0" * 8),
    _npy_bytes("(" * 100_000, b"", 2),                                                      # deep nesting
    _npy_bytes("-" * 60_000 + "1", b""),
    _npy_bytes("not " * 15_000 + "1", b""),
    _npy_bytes("{'x': " + "1" * 5000 + "}", b""),                                           # int digit limit
    _npy_bytes(b"{'descr': '<f4'\x00}", b""),                                              # NUL byte
    _npy_bytes(b"{'descr': '\xff\xfe'}", b"", version=3),                                  # bad UTF-8 (v3)
    _npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2**70,), }", b""),
])
def test_bad_npy(tmp_path, data):
    malformed_buf("bad.npy", data)
    malformed_file(tmp_path, "bad.npy", data)


@pytest.mark.parametrize("descr", ["a", "S", "V0", "(2,)<f4", "i4,i4", "M8[Y]", "O", "|O", "xyz", "",
                                   "(100000000000,)i4", "<f4\x00", "T", "U999999999999", "(-1,)f4", 1, None,
                                   ["<f4"], [("a", "<f4")], {"x": 1}, b"<f4"])
def test_npy_odd_descr_is_opaque_or_malformed_even_with_warnings_as_errors(descr):
    data = _npy_bytes(f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': (2,), }}", b"\0" * 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            sf = scan_buffer("odd.npy", memoryview(data))
        except MalformedCheckpoint as exc:
            assert exc.reason and "odd.npy" in str(exc)
        else:
            check_cover(sf, data)
            assert sf.tensors() == []


def test_npy_name_is_base_name_without_suffix():
    data = _bytes_of(lambda f: np.save(f, np.zeros(2, np.float32)))
    sf = scan_buffer("a/b/c.d.npy", memoryview(data))
    assert [s.tensor.name for s in sf.tensors()] == ["c.d"]


@pytest.mark.parametrize("data", [b"", b"PK", b"PK\x03\x04" + b"\0" * 30, b"PK\x05\x06" + b"\0" * 17,
                                  b"not a zip at all" * 10])
def test_bad_npz(tmp_path, data):
    malformed_buf("bad.npz", data)
    malformed_file(tmp_path, "bad.npz", data)


@pytest.mark.parametrize("descr", ["f4,,", "<f4, ("])
def test_npy_descr_numpy_cannot_parse_is_opaque(descr):
    """numpy hands such a descr to Python's parser, which raises SyntaxError (found by fuzzing)."""
    data = _npy_bytes(f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': (2,), }}", b"\0" * 8)
    sf = scan_buffer("d.npy", memoryview(data))
    check_cover(sf, data)
    assert sf.tensors() == []


@pytest.mark.parametrize("rel", ["v.npz", "v.pt"])
def test_zip_naming_an_unknown_version_is_malformed(tmp_path, rel):
    """zipfile raises NotImplementedError for a "version needed to extract" it does not know (found by fuzzing)."""
    f = io.BytesIO()
    if rel.endswith(".npz"):
        np.savez(f, a=np.arange(4))
    else:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    data = bytearray(f.getvalue())
    data[data.rfind(b"PK\x01\x02") + 6] = 200
    malformed_buf(rel, bytes(data))
    malformed_file(tmp_path, rel, bytes(data))


def test_empty_zip_is_an_empty_opaque_npz():
    data = b"PK\x05\x06" + b"\0" * 18
    sf = scan_buffer("e.npz", memoryview(data))
    check_cover(sf, data)
    assert sf.tensors() == []


def test_npz_duplicate_central_entries_overlap_is_malformed():
    """Two central-directory entries pointing at the same stored member would give overlapping tensors."""
    buf = bytearray(_bytes_of(lambda f: np.savez(f, a=np.arange(4, dtype=np.int32), b=np.arange(4, dtype=np.int32))))
    with zipfile.ZipFile(__import__("io").BytesIO(bytes(buf))) as zf:
        infos = zf.infolist()
    # point b's central record at a's local header
    cd = buf.find(b"PK\x01\x02", infos[1].header_offset)
    assert cd > 0
    struct.pack_into("<I", buf, cd + 42, infos[0].header_offset)
    try:
        sf = scan_buffer("dup.npz", memoryview(bytes(buf)))
    except MalformedCheckpoint as exc:
        assert "dup.npz" in str(exc)
    else:  # zipfile may reject the name mismatch lazily only; overlapping tensors must never come back
        check_cover(sf, bytes(buf))


# ------------------------------------------------------------------------------------------ 4. fuzzing

def _bases() -> dict[str, bytes]:
    st_file = official_bytes({"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, 2], np.int8),
                              "e": np.zeros((0,), np.float16), "s": np.array(2.5, np.float64)}, {"fmt": "np"})
    npz = _bytes_of(lambda f: np.savez(f, x=np.arange(6, dtype=np.int16), y=np.ones((2, 2), np.float32),
                                       z=np.asfortranarray(np.ones((2, 3), np.uint8))))
    npz_c = _bytes_of(lambda f: np.savez_compressed(f, x=np.arange(6, dtype=np.int16)))
    npy = _bytes_of(lambda f: np.save(f, np.arange(10, dtype=np.float64)))
    ours = ck_st.build_header([("a", "U8", (3,), 3), ("b", "BF16", (2,), 4)], {"k": "v"}) + bytes(range(7))
    return {"m.safetensors": st_file, "o.safetensors": ours, "a.npz": npz, "c.npz": npz_c, "a.npy": npy}


BASES = _bases()
NAMES = ["f.safetensors", "f.npy", "f.npz", "f.txt", "F.SAFETENSORS", "F.NpZ"]  # torch names: not this file's


def _check_scan(rel: str, data: bytes) -> None:
    try:
        sf = scan_buffer(rel, memoryview(data))
    except MalformedCheckpoint as exc:
        assert exc.path == rel and exc.reason and rel in str(exc)
    else:
        check_cover(sf, data, rel)


_pos = st.integers(min_value=0, max_value=1 << 16)
_mutation = st.one_of(
    st.tuples(st.just("flip"), _pos, st.integers(0, 7)),
    st.tuples(st.just("trunc"), _pos),
    st.tuples(st.just("splice"), _pos, st.integers(0, 64), st.binary(max_size=64)),
    st.tuples(st.just("dup"), _pos, st.integers(0, 64), _pos),
    st.tuples(st.just("byte"), _pos, st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, ord("["), ord("{"), ord('"'),
                                                      ord("-"), ord("9"), ord(","), ord("]"), ord("}")])),
)


def _mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op in ops:
        n = len(buf)
        if op[0] == "flip" and n:
            buf[op[1] % n] ^= 1 << op[2]
        elif op[0] == "byte" and n:
            buf[op[1] % n] = op[2]
        elif op[0] == "trunc":
            del buf[op[1] % (n + 1):]
        elif op[0] == "splice":
            i = op[1] % (n + 1)
            buf[i:i + op[2]] = op[3]
        elif op[0] == "dup" and n:
            i = op[1] % n
            seg = bytes(buf[i:i + op[2]])
            j = op[3] % (n + 1)
            buf[j:j] = seg
    return bytes(buf)


def _random_bytes(rel, data):
    _check_scan(rel, data)


def _mutated(base, ops, rename):
    data = _mutate(BASES[base], ops)
    _check_scan(base, data)
    if rename:
        # the same bytes under every other reader as well
        for rel in NAMES:
            _check_scan(rel, data)


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(allow_nan=False),
                       st.text(max_size=8))
_json = st.recursive(_json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c,
                                                                                       max_size=4), max_leaves=12)
_dim = st.one_of(st.integers(0, 6), st.integers(-3, 2**40), st.booleans(), st.just(2.0), st.just("2"))
_st_entry = st.one_of(
    st.fixed_dictionaries({
        "dtype": st.one_of(st.sampled_from(list(DTYPES)), st.sampled_from(["F4", "f32", ""]), _json),
        "shape": st.one_of(st.lists(_dim, max_size=3), _json),
        "data_offsets": st.one_of(st.lists(st.integers(-2, 80), min_size=2, max_size=2),
                                  st.lists(st.one_of(st.integers(-2, 80), st.booleans(), st.just(1.0)), max_size=3),
                                  _json),
    }, optional={"extra": _json}),
    _json,
)
_st_header = st.dictionaries(st.one_of(st.text(max_size=6), st.just("__metadata__")), _st_entry, max_size=5)


def _structured_st(header, data_len, pad):
    data = craft(header, b"\x5a" * data_len, pad=pad)
    _check_scan("h.safetensors", data)


_npy_tokens = st.sampled_from([
    "{", "}", "[", "]", "(", ")", ":", ",", " ", "'descr'", "'fortran_order'", "'shape'", "'<f4'", "'>f4'",
    "'|u1'", "'|O'", "'a'", "'V0'", "'i4,i4'", "True", "False", "None", "0", "1", "2", "-1", "2.0", "1j", "'x'",
    "b''", "{}", "[]", "()", "set()", "...", "2**70", "\\n", "'\\d'",
])
_npy_valid_dict = st.fixed_dictionaries({
    "descr": st.one_of(st.sampled_from(NPY_DTYPES + [">f4", "|O", "a", "V2", "<M8[s]", "(2,)<i2", "i4,i4"]), _json),
    "fortran_order": st.one_of(st.booleans(), _json),
    "shape": st.one_of(st.tuples(), st.tuples(_dim), st.tuples(_dim, _dim), _json),
}, optional={"extra": _json})


def _npy_header_fuzz(tokens, as_dict, data_len, version):
    text = repr(as_dict) if as_dict is not None else "".join(tokens)
    data = _npy_bytes(text.encode("utf-8", "surrogatepass") if version == 3 else text.encode("latin1", "replace"),
                      b"\x01" * data_len, version=version)
    _check_scan("h.npy", data)
    # and as the only member of a stored npz
    import io

    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("m.npy", data)
    _check_scan("h.npz", f.getvalue())


def _fuzz_pair(fn, strategies: dict, name: str):
    fast = FAST(given(**strategies)(fn))
    slow = soak(skip_unless_soak(SOAK_SETTINGS(given(**strategies)(fn))))
    fast.__name__ = f"test_fuzz_{name}"
    slow.__name__ = f"test_soak_fuzz_{name}"
    return fast, slow


_RANDOM = {"rel": st.sampled_from(NAMES), "data": st.one_of(
    st.binary(max_size=512),
    st.builds(lambda n, rest: struct.pack("<Q", n) + rest, st.integers(0, 600), st.binary(max_size=512)),
    st.builds(lambda v, rest: b"\x93NUMPY" + bytes([v, 0]) + rest, st.integers(0, 4), st.binary(max_size=256)),
    st.builds(lambda rest: b"PK\x03\x04" + rest, st.binary(max_size=256)),
)}
_MUTATED = {"base": st.sampled_from(sorted(BASES)), "ops": st.lists(_mutation, min_size=1, max_size=4),
            "rename": st.booleans()}
_STRUCT = {"header": _st_header, "data_len": st.integers(0, 80), "pad": st.booleans()}
_NPY = {"tokens": st.lists(_npy_tokens, max_size=30), "as_dict": st.none() | _npy_valid_dict,
        "data_len": st.integers(0, 40), "version": st.sampled_from([1, 2, 3])}

test_fuzz_random_bytes, test_soak_fuzz_random_bytes = _fuzz_pair(_random_bytes, _RANDOM, "random_bytes")
test_fuzz_mutated, test_soak_fuzz_mutated = _fuzz_pair(_mutated, _MUTATED, "mutated")
test_fuzz_st_header, test_soak_fuzz_st_header = _fuzz_pair(_structured_st, _STRUCT, "st_header")
test_fuzz_npy_header, test_soak_fuzz_npy_header = _fuzz_pair(_npy_header_fuzz, _NPY, "npy_header")


# --------------------------------------------------------------------------------------- 5. walk_source

def test_walk_source_file_gives_base_name(tmp_path):
    p = tmp_path / "sub" / "model.safetensors"
    p.parent.mkdir()
    p.write_bytes(b"x")
    assert walk_source(p) == [(p, "model.safetensors")]
    assert walk_source(str(p)) == [(p, "model.safetensors")]


def _tree(root: Path, files: list[str]) -> None:
    for rel in files:
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(rel.encode())


def test_walk_source_directory_relative_posix_skipping_control_dirs(tmp_path):
    root = tmp_path / "ckpt"
    _tree(root, ["config.json", "model.safetensors", "tok/vocab.txt", "tok/merges.txt", "a/b/c/deep.npy",
                 ".ckstore/objects/ab/cd", ".git/HEAD", "sub/.git/config", "sub/x.bin", ".hidden", "sub/.ckstore"])
    got = walk_source(root)
    rels = [r for _, r in got]
    assert set(rels) == {"config.json", "model.safetensors", "tok/vocab.txt", "tok/merges.txt", "a/b/c/deep.npy",
                         "sub/x.bin", ".hidden", "sub/.ckstore"}  # .ckstore as a *file* is kept
    for full, rel in got:
        assert full == root / rel and full.is_file()
        assert "\\" not in rel and not rel.startswith("/")
    assert len(rels) == len(set(rels))
    assert walk_source(root) == got  # deterministic


def test_walk_source_flat_directory_is_sorted(tmp_path):
    _tree(tmp_path / "d", ["b", "a", "c.txt", "B", "a.b"])
    assert [r for _, r in walk_source(tmp_path / "d")] == sorted(["b", "a", "c.txt", "B", "a.b"])


def test_walk_source_nested_directory_is_sorted(tmp_path):
    root = tmp_path / "n"
    _tree(root, ["z.txt", "a/x", "m/n/o", "b.txt"])
    rels = [r for _, r in walk_source(root)]
    assert rels == sorted(rels)


def test_walk_source_symlinks(tmp_path):
    root = tmp_path / "r"
    _tree(root, ["real.bin"])
    _tree(tmp_path / "outside", ["blob", "dir/inner"])
    (root / "link.bin").symlink_to(tmp_path / "outside" / "blob")
    (root / "linkdir").symlink_to(tmp_path / "outside" / "dir", target_is_directory=True)
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    rels = {r for _, r in walk_source(root)}
    assert "link.bin" in rels and "real.bin" in rels  # symlinked files are read through (HF cache layout)
    assert "dangling" not in rels
    assert not any(r.startswith("linkdir") for r in rels)  # directories are not followed


def test_walk_source_empty_and_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    assert walk_source(tmp_path / "empty") == []
    with pytest.raises(UsageError):
        walk_source(tmp_path / "nope")
