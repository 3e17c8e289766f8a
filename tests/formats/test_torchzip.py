"""torchzip: torch.save archives become tensor spans; hostile pickles stay opaque and run nothing; broken zips raise."""

from __future__ import annotations

import contextlib
import copyreg
import io
import os
import pickle
import posix
import random
import runpy
import shlex
import struct
import subprocess
import sys
import time
import timeit
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ckstore.errors import MalformedCheckpoint
from ckstore.formats import ScannedFile, TensorInfo, scan_buffer, torchzip
from ckstore.formats.base import map_file, opaque
from conftest import joined

# ---------------------------------------------------------------------------------------------------- helpers

# Audit events that mean code ran: processes, exec/compile, fresh imports, file opens, the default find_class.
WATCHED = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "subprocess.Popen", "exec", "compile",
           "import", "open", "pickle.find_class", "ctypes", "builtins.input", "socket", "webbrowser")
_EVENTS: list[tuple[str, str]] = []
_RECORDING = [False]


def _hook(event: str, args: tuple) -> None:
    if _RECORDING[0] and event.startswith(WATCHED):
        _EVENTS.append((event, repr(args)[:200]))


@pytest.fixture(scope="session")
def audit() -> Callable[[], contextlib.AbstractContextManager[list[tuple[str, str]]]]:
    """Install the audit hook once per session (hooks cannot be removed); yields a recorder context manager."""
    sys.addaudithook(_hook)
    for codec in ("cp437", "raw_unicode_escape", "unicode_escape"):  # zipfile and text opcodes load these lazily
        b"x".decode(codec)

    @contextlib.contextmanager
    def watch() -> Iterator[list[tuple[str, str]]]:
        _EVENTS.clear()
        _RECORDING[0] = True
        try:
            yield _EVENTS
        finally:
            _RECORDING[0] = False
    return watch


def save(tmp_path: Path, obj: object, name: str = "ck.pt") -> tuple[ScannedFile, bytes]:
    torch = pytest.importorskip("torch")
    path = tmp_path / name
    torch.save(obj, path)
    data = path.read_bytes()
    sf = torchzip.scan(name, map_file(path))
    assert joined(sf) == data
    return sf, data


def by_name(sf: ScannedFile) -> dict:
    return {s.tensor.name: s for s in sf.tensors()}


def raw(t: object) -> bytes:
    """The bytes torch stores for a contiguous CPU tensor (numpy has no bf16/float8: view them as ints)."""
    torch = pytest.importorskip("torch")
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    elif t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        t = t.view(torch.uint8)
    return t.numpy().tobytes()


def rezip(template: bytes, replace: dict[str, bytes | None], compress: set[str] = frozenset()) -> bytes:
    """Copy a zip, replacing members whose name ends with a key (None drops it); `compress` ends are deflated."""
    src = zipfile.ZipFile(io.BytesIO(template))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            end = next((k for k in replace if info.filename.endswith(k)), None)
            data = replace[end] if end is not None else src.read(info)
            if data is not None:
                deflate = any(info.filename.endswith(k) for k in compress)
                dst.writestr(info.filename, data, zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
    return out.getvalue()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real torch.save archive of one small state dict, used as the envelope for hostile data.pkl files."""
    torch = pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("tpl") / "tpl.pt"
    torch.save({"layer.weight": torch.arange(4, dtype=torch.float32)}, path)
    return path.read_bytes()


def member(zip_bytes: bytes, end: str) -> bytes:
    zf = zipfile.ZipFile(io.BytesIO(zip_bytes))
    return zf.read(next(n for n in zf.namelist() if n.endswith(end)))


# ---------------------------------------------------------------------------------------------------- real files

def test_dtypes_names_shapes_and_bytes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    sd = {
        "f32": torch.randn(3, 4, generator=g), "f16": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(2, 3, generator=g).bfloat16(), "f64": torch.randn(2, generator=g).double(),
        "i64": torch.arange(-3, 3), "i32": torch.arange(4, dtype=torch.int32), "i8": torch.arange(-2, 2).to(torch.int8),
        "u8": torch.arange(7, dtype=torch.uint8), "bool": torch.tensor([True, False, True]),
        "f8": torch.randn(2, 2, generator=g).to(torch.float8_e4m3fn),
        "f8b": torch.randn(3, generator=g).to(torch.float8_e5m2),
        "scalar": torch.tensor(2.5), "empty": torch.zeros(0), "empty2d": torch.zeros(2, 0),
    }
    sf, _ = save(tmp_path, sd)
    want = {"f32": "F32", "f16": "F16", "bf16": "BF16", "f64": "F64", "i64": "I64", "i32": "I32", "i8": "I8",
            "u8": "U8", "bool": "BOOL", "f8": "F8_E4M3", "f8b": "F8_E5M2", "scalar": "F32", "empty": "F32",
            "empty2d": "F32"}
    spans = by_name(sf)
    assert set(spans) == set(want)
    for name, t in sd.items():
        span = spans[name]
        assert (span.tensor.dtype, span.tensor.shape) == (want[name], tuple(t.shape)), name
        assert bytes(span.data) == raw(t), name
        assert span.offset % 64 == 0  # torch aligns records; a wrong local-header computation would show here


def test_nested_model_and_optimizer_state(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "tags": {"a", "b"},
            "blob": b"\x00\xffbytes", "nested": {"layer": [torch.ones(2, 2)]}}
    sf, _ = save(tmp_path, ckpt, "train.ckpt")
    spans = by_name(sf)
    sd, osd = model.state_dict(), opt.state_dict()
    for k, t in sd.items():
        assert spans[f"model.{k}"].tensor.shape == tuple(t.shape) and bytes(spans[f"model.{k}"].data) == raw(t)
    assert spans["model.1.num_batches_tracked"].tensor == TensorInfo("model.1.num_batches_tracked", "I64", ())
    for i, state in osd["state"].items():
        for k in ("exp_avg", "exp_avg_sq", "step"):
            span = spans[f"optimizer.state.{i}.{k}"]
            assert span.tensor.shape == tuple(state[k].shape) and bytes(span.data) == raw(state[k])
    assert spans["nested.layer.0"].tensor.shape == (2, 2)
    assert len(spans) == len(sd) + 3 * len(osd["state"]) + 1


def test_tied_weights_share_one_span(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    w = torch.randn(4, 3)
    sf, _ = save(tmp_path, {"embed.weight": w, "head.weight": w, "param": torch.nn.Parameter(w)})
    (span,) = sf.tensors()
    assert span.tensor == TensorInfo("embed.weight", "F32", (4, 3)) and bytes(span.data) == raw(w)


def test_views_of_one_storage(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    # a slice saved alone still writes its whole storage: no tensor views all of it, so the record is flat
    sf, _ = save(tmp_path, {"col": base[:, 1]}, "slice.pt")
    (span,) = sf.tensors()
    assert span.tensor == TensorInfo("col", "F32", (12,)) and bytes(span.data) == raw(base)
    sf, _ = save(tmp_path, {"t": base.t()}, "transposed.pt")  # whole storage, not C-contiguous
    assert sf.tensors()[0].tensor.shape == (12,)
    sf, _ = save(tmp_path, {"col": base[:, 1], "full": base}, "both.pt")  # one full view: its shape wins
    assert sf.tensors()[0].tensor == TensorInfo("col", "F32", (3, 4))
    sf, _ = save(tmp_path, {"a": base, "b": base.view(4, 3)}, "reshaped.pt")  # two full views disagree
    assert sf.tensors()[0].tensor == TensorInfo("a", "F32", (12,))
    sf, _ = save(tmp_path, {"a": base[1:]}, "offset.pt")
    assert sf.tensors()[0].tensor.shape == (12,)


def test_top_level_tensor_list_and_storage(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    t = torch.arange(5, dtype=torch.int16)
    sf, _ = save(tmp_path, t, "t.pth")
    assert sf.tensors()[0].tensor == TensorInfo("data/0", "I16", (5,))
    sf, _ = save(tmp_path, [t, {"x": t * 2}], "l.pt")
    assert [s.tensor.name for s in sf.tensors()] == ["0", "1.x"]
    sf, _ = save(tmp_path, {"s": t.untyped_storage()}, "s.pt")
    assert sf.tensors()[0].tensor == TensorInfo("s", "U8", (10,))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_protocols(tmp_path: Path, protocol: int) -> None:
    """torch.save's pickle_protocol switches to STACK_GLOBAL, MEMOIZE and FRAME from 4 on."""
    torch = pytest.importorskip("torch")
    sd = {"w": torch.randn(2, 3), "b": torch.zeros(3, dtype=torch.bfloat16), "tags": {"x"}, "blob": b"\x01"}
    path = tmp_path / "p.pt"
    torch.save(sd, path, pickle_protocol=protocol)
    sf = torchzip.scan("p.pt", map_file(path))
    assert joined(sf) == path.read_bytes()
    assert [s.tensor for s in sf.tensors()] == [TensorInfo("w", "F32", (2, 3)), TensorInfo("b", "BF16", (3,))]


def test_dispatch_and_record_edge_cases(tmp_path: Path, template: bytes) -> None:
    sf = scan_buffer("model.bin", memoryview(template))
    assert [s.tensor.name for s in sf.tensors()] == ["layer.weight"]
    # deflated storage record: that record stays opaque, the file still reassembles
    deflated = rezip(template, {}, compress={"/data/0"})
    assert not torchzip.scan("d.pt", memoryview(deflated)).tensors()
    # record shorter than the pickle says: opaque, not an error
    short = rezip(template, {"/data/0": member(template, "/data/0")[:-4]})
    assert not torchzip.scan("s.pt", memoryview(short)).tensors()
    # big-endian payload would be mislabelled by little-endian dtype names: whole file opaque
    big = rezip(template, {"/byteorder": b"big"})
    assert torchzip.scan("b.pt", memoryview(big)).spans == (opaque("b.pt", memoryview(big)).spans[0],)
    # a zip that torch did not write is opaque; a record missing from the archive is skipped
    for data in (rezip(template, {"/data.pkl": None}), rezip(template, {"/data/0": None})):
        sf = torchzip.scan("z.pt", memoryview(data))
        assert not sf.tensors() and joined(sf) == data


# ---------------------------------------------------------------------------------------------------- hostile pickles

def _g(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _s(text: str) -> bytes:
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


class R:
    """Pickles as `fn(*args)`: the classic __reduce__ gadget."""

    def __init__(self, fn: object, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple:
        return self.fn, self.args


P2 = b"\x80\x02"
# copyreg extension code -> the global it names (one code per global: copyreg refuses to alias them)
EXT_CODES = {0xF1: ("os", "system"), 0x1F1F: ("posix", "system"), 0x7FFFFFF0: ("subprocess", "getoutput")}


def _touch(p: str) -> str:
    return f"touch {shlex.quote(p)}"


def _code(p: str) -> str:
    return f"open({p!r}, 'w').close()"


def _call_chain(p: str, importer: tuple[str, str]) -> bytes:
    """getattr(import('os'), 'system')(cmd) through an importer callable."""
    return (P2 + _g("builtins", "getattr") + b"(" + _g(*importer) + b"(" + _s("os") + b"tR" + _s("system") + b"tR"
            + b"(" + _s(_touch(p)) + b"tR.")


def _splice(real: bytes, evil: bytes) -> bytes:
    """Insert `"evil": <evil call>` as the first entry of a real torch state-dict pickle."""
    head = real.index(b"}q\x00") + 3  # after EMPTY_DICT, BINPUT 0: SETITEM the evil pair, then the real items
    return real[:head] + _s("evil") + evil + b"s" + real[head:]


def _rebuild_args(storage: bytes) -> bytes:
    return (P2 + _g("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + b"K\x00K\x01\x85K\x01\x85\x89"
            + _g("collections", "OrderedDict") + b")Rt" + b"R.")


# name -> (builder(sentinel, real data.pkl) -> payload, live: would create the sentinel under plain pickle.loads)
PAYLOADS: dict[str, tuple[Callable[[str, bytes], bytes], bool]] = {
    "os_system_reduce": (lambda p, r: P2 + _g("os", "system") + _s(_touch(p)) + b"\x85R.", True),
    "posix_system_reduce_p2": (lambda p, r: pickle.dumps(R(posix.system, _touch(p)), protocol=2), True),
    "posix_system_stack_global_p4": (lambda p, r: pickle.dumps(R(os.system, _touch(p)), protocol=4), True),
    "subprocess_popen": (lambda p, r: pickle.dumps(R(subprocess.Popen, ["touch", p]), protocol=2), True),
    "builtins_exec": (lambda p, r: pickle.dumps(R(exec, _code(p)), protocol=2), True),
    "builtins_eval": (lambda p, r: pickle.dumps(R(eval, _code(p)), protocol=4), True),
    "builtins_open": (lambda p, r: pickle.dumps(R(open, p, "w"), protocol=2), True),
    "import_getattr_chain": (lambda p, r: _call_chain(p, ("builtins", "__import__")), True),
    "importlib_import_module_chain": (lambda p, r: _call_chain(p, ("importlib", "import_module")), True),
    "sys_modules_getattr_chain": (lambda p, r: P2 + _g("builtins", "getattr") + b"(" + _g("builtins", "getattr")
                                  + b"(" + _g("sys", "modules") + _s("get") + b"tR(" + _s("os") + b"tR" + _s("system")
                                  + b"tR(" + _s(_touch(p)) + b"tR.", True),
    "stack_global_via_memo": (lambda p, r: b"\x80\x04" + _s("os") + b"\x94" + _s("system") + b"\x94" + b"h\x00h\x01\x93"
                              + _s(_touch(p)) + b"\x85R.", True),
    "global_protocol0_text": (lambda p, r: b"cos\nsystem\n(V" + _touch(p).encode() + b"\ntR.", True),
    "inst_opcode": (lambda p, r: b"(V" + _touch(p).encode() + b"\nios\nsystem\n.", True),
    "obj_opcode": (lambda p, r: b"(cos\nsystem\nV" + _touch(p).encode() + b"\no.", True),
    "newobj_popen": (lambda p, r: P2 + _g("subprocess", "Popen") + b"(]" + _s("touch") + b"a" + _s(p) + b"at\x81.",
                     False),
    "build_setstate_gadget": (lambda p, r: P2 + _g("collections", "OrderedDict") + b")RN}" + _s("__setstate__")
                              + _g("os", "system") + b"s\x86b" + _s(_touch(p)) + b"b.", True),
    "build_slotstate_on_allowed": (lambda p, r: P2 + _g("collections", "OrderedDict") + b")RN}" + _s("__class__")
                                   + _g("torch", "FloatStorage") + b"s\x86b.", False),
    "build_on_rebuild_function": (lambda p, r: P2 + _g("torch._utils", "_rebuild_tensor_v2") + b"N}"
                                  + _s("__defaults__") + _s(p) + b"s\x86b.", False),
    "rebuild_tensor_v2_evil_storage": (lambda p, r: _rebuild_args(_g("os", "system") + _s(_touch(p)) + b"\x85R"),
                                       False),
    "rebuild_tensor_v2_string_storage": (lambda p, r: _rebuild_args(_s(p)), False),
    "rebuild_tensor_v2_evil_hooks": (lambda p, r: r.replace(_g("collections", "OrderedDict") + b"q\x0a)R",
                                                            _g("os", "system") + b"q\x0a(" + _s(_touch(p)) + b"tR", 1),
                                     False),
    "evil_entry_in_real_state_dict": (lambda p, r: _splice(r, _g("os", "system") + _s(_touch(p)) + b"\x85R"), True),
    "call_storage_class": (lambda p, r: P2 + _g("torch", "FloatStorage") + _s(p) + b"\x85R.", False),
    "torch_load_from_bytes": (lambda p, r: P2 + _g("torch.storage", "_load_from_bytes")
                              + pickle.dumps(pickle.dumps(R(os.system, _touch(p)), 2), 2)[2:-1] + b"\x85R.", False),
    "pickle_loads_nested": (lambda p, r: pickle.dumps(R(pickle.loads, pickle.dumps(R(os.system, _touch(p)))), 2),
                            True),
    "numpy_runstring": (lambda p, r: P2 + _g("numpy.testing._private.utils", "runstring") + _s(_code(p)) + b"}\x86R.",
                        True),
    "timeit_stmt": (lambda p, r: pickle.dumps(R(timeit.timeit, _code(p), "pass", time.perf_counter, 1), 2), True),
    "runpy_run_code": (lambda p, r: pickle.dumps(R(runpy._run_code, _code(p), {}), 2), True),
    "functools_partial": (lambda p, r: P2 + _g("functools", "partial") + b"(" + _g("os", "system") + _s(_touch(p))
                          + b"tR)R.", True),
    "ext1_registered": (lambda p, r: P2 + b"\x82\xf1" + _s(_touch(p)) + b"\x85R.", True),
    "ext2_registered": (lambda p, r: P2 + b"\x83\x1f\x1f" + _s(_touch(p)) + b"\x85R.", True),
    "ext4_registered": (lambda p, r: P2 + b"\x84" + struct.pack("<i", 0x7FFFFFF0) + _s(_touch(p)) + b"\x85R.", True),
    "persid_text_id": (lambda p, r: b"Pos.system\n.", False),
    "next_buffer_p5": (lambda p, r: b"\x80\x05\x97.", False),
}


@pytest.fixture
def ext_registry() -> Iterator[None]:
    """EXT opcodes resolve through copyreg's registry: point the test codes at shell runners while a test runs."""
    for code, (module, name) in EXT_CODES.items():
        copyreg.add_extension(module, name, code)
    try:
        yield
    finally:
        for code, (module, name) in EXT_CODES.items():
            copyreg.remove_extension(module, name, code)


@pytest.fixture(scope="module")
def real_pkl(template: bytes) -> bytes:
    return member(template, "/data.pkl")


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_hostile_pickle_stays_opaque(name: str, tmp_path: Path, template: bytes, real_pkl: bytes,
                                     audit: Callable, ext_registry: None) -> None:
    sentinel = tmp_path / "pwned"
    payload = PAYLOADS[name][0](str(sentinel), real_pkl)
    for rel, data in ((f"{name}.pt", rezip(template, {"/data.pkl": payload})), (f"{name}-legacy.pt", payload)):
        (tmp_path / rel).write_bytes(data)
        buf = map_file(tmp_path / rel)
        with audit() as events:
            results = [torchzip.scan(rel, buf), scan_buffer(rel, buf)]
        assert events == [], events
        for sf in results:
            assert sf.tensors() == [] and len(sf.spans) == 1 and joined(sf) == data
    if "popen" in name:
        time.sleep(0.2)  # a spawned `touch` would be asynchronous
    assert not sentinel.exists()


def test_payloads_are_live_under_plain_pickle(tmp_path: Path, real_pkl: bytes) -> None:
    """Control: the payloads marked live really do create their sentinel when given to pickle.loads."""
    live = {n: b for n, (b, is_live) in PAYLOADS.items() if is_live}
    for name, build in live.items():
        (tmp_path / f"{name}.pkl").write_bytes(build(str(tmp_path / f"{name}.pwned"), real_pkl))
    script = ("import copyreg, pickle, sys, pathlib\n"
              "sys.modules['torch'] = None  # real_pkl's later globals fail fast instead of importing torch\n"
              f"for code, (m, n) in {EXT_CODES!r}.items(): copyreg.add_extension(m, n, code)\n"
              "for f in sorted(pathlib.Path(sys.argv[1]).glob('*.pkl')):\n"
              "    try: pickle.loads(f.read_bytes())\n"
              "    except Exception: pass\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=60, capture_output=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all((tmp_path / f"{n}.pwned").exists() for n in live):
        time.sleep(0.05)
    assert [n for n in live if not (tmp_path / f"{n}.pwned").exists()] == []
    assert len(PAYLOADS) >= 20


@pytest.mark.parametrize("payload", [
    P2 + b"]r\xf0\xff\xff\xff.",  # LONG_BINPUT near 2**32: the C unpickler would size its memo to match
    P2 + b"(" * 5000 + b"]" + b"t" * 5000 + b".",  # deeply nested tuples
    # each list holds the previous one twice: 2**150 paths through 151 lists
    P2 + b"]" + b"".join(b"\x94(" + (b"j" + struct.pack("<I", i)) * 2 + b"l" for i in range(150)) + b".",
    P2 + b"N" * 100 + b"0" * 100 + b")" * (torchzip.MAX_OPS + 10) + b".",  # too many opcodes
    # 60k int keys that all hash alike (n * (2**61 - 1)): a dict of them takes minutes to build
    P2 + b"}(" + b"".join(b"\x8a" + bytes([len(e)]) + e + b"N" for e in
                          (pickle.encode_long(i * (2**61 - 1)) for i in range(1, 60_000))) + b"u.",
], ids=["memo-index", "deep-nesting", "shared-dag", "many-ops", "hash-collisions"])
def test_resource_bombs_are_bounded(payload: bytes, template: bytes) -> None:
    data = rezip(template, {"/data.pkl": payload})
    start = time.monotonic()
    sf = torchzip.scan("bomb.pt", memoryview(data))
    assert time.monotonic() - start < 10
    assert sf.tensors() == [] and joined(sf) == data


# ---------------------------------------------------------------------------------------------------- broken zips

def test_truncated_and_garbage_archives_raise(template: bytes) -> None:
    n = len(template)
    cases = [template[:cut] for cut in (4, 30, 64, n // 3, n // 2, n - 22, n - 1)]
    cases += [b"PK\x03\x04" + bytes(random.Random(s).randbytes(200)) for s in range(3)] + [b"PK\x03\x04"]
    for data in cases:
        with pytest.raises(MalformedCheckpoint) as exc:
            scan_buffer("broken.pt", memoryview(data))
        assert exc.value.path == "broken.pt" and exc.value.reason


def test_corrupted_bytes_never_raise_anything_else(template: bytes) -> None:
    rng = random.Random(1234)
    for _ in range(300):
        data = bytearray(template)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(4, len(data))] = rng.randrange(256)
        try:
            sf = torchzip.scan("fuzz.pt", memoryview(bytes(data)))
        except MalformedCheckpoint:
            continue
        assert joined(sf) == bytes(data)


def test_record_header_outside_file_raises(template: bytes) -> None:
    zf = zipfile.ZipFile(io.BytesIO(template))
    info = next(i for i in zf.infolist() if i.filename.endswith("/data/0"))
    data = bytearray(template)
    data[info.header_offset:info.header_offset + 4] = b"XXXX"  # the local header's magic is gone
    with pytest.raises(MalformedCheckpoint, match="local header"):
        torchzip.scan("bad.pt", memoryview(bytes(data)))
