"""torch.save files read by an allowlist unpickler that runs no code: each storage is a tensor span.

Two layouts: the zip archive (torch >= 1.6: `archive/data.pkl` and one `archive/data/<key>` record per storage),
and the legacy stream (before 1.6, or `_use_new_zipfile_serialization=False`): five pickles — the magic number,
the protocol version (1001), a sys-info dict, the object (storages as persistent ids), the sorted storage keys —
then each storage as an int64 element count and its raw bytes. What either cannot label is stored opaque."""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
import struct
import zipfile
from collections.abc import Callable

from ..errors import MalformedCheckpoint
from .base import ZIP_ERRORS, ScannedFile, TensorInfo, itemsize, opaque, spans_from_tensors

MAGIC = b"PK\x03\x04"
RecordTest = Callable[[str, str], bool]  # (module, class name) -> whether its instances load as `Record`s
MAX_PICKLE = 64 << 20  # real state-dict pickles are KBs to a few MBs; anything bigger is stored opaque
MAX_OPS = 1 << 22  # pickletools walks ~2M opcodes/s: this bounds the pre-scan to a couple of seconds
MAX_MEMO = 1 << 20  # the C unpickler sizes its memo array by the largest PUT index, so cap it before loading
MAX_DEPTH = 200  # nesting depth of containers when naming tensors (the walk is recursive)
MAX_DIMS = 64  # torch's own limit; also keeps shape products small
MAX_INT = 1 << 64  # ints beyond +-2**64 share hashes (mod 2**61-1) en masse: a dict of them is quadratic to build
# Opcodes torch.save never writes and that reach classes or buffers the allowlist has no use for.
_BANNED_OPS = frozenset({"INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER",
                         "READONLY_BUFFER"})
_PKL = re.compile(r"[^/]+/data\.pkl")
# torch dtype attribute name -> safetensors name; legacy storage class -> safetensors name.
# (torch pickles a dtype by its canonical name, so aliases like torch.float never appear)
_DTYPES = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "uint16": "U16", "int16": "I16", "uint32": "U32",
           "int32": "I32", "uint64": "U64", "int64": "I64", "float16": "F16", "bfloat16": "BF16", "float32": "F32",
           "float64": "F64", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e8m0fnu": "F8_E8M0",
           "complex64": "C64"}
_STORAGES = {"FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16", "DoubleStorage": "F64",
             "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
             "ByteStorage": "U8", "BoolStorage": "BOOL", "Float8_e4m3fnStorage": "F8_E4M3",
             "Float8_e5m2Storage": "F8_E5M2"}


class Refused(Exception):
    """The pickle asks for something outside the allowlist: the file is kept as opaque bytes."""


class _Sealed:
    """Base of every placeholder: no __dict__ (slots) and BUILD refused, so a pickle cannot alter one."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise Refused(f"BUILD on {type(self).__name__}")


class _Kind(_Sealed):
    """A torch dtype or storage class. Untyped storages count numel in bytes and take their tensors' dtype."""

    __slots__ = ("dtype", "untyped")

    def __init__(self, dtype: str, untyped: bool) -> None:
        self.dtype, self.untyped = dtype, untyped


class _Storage(_Sealed):
    __slots__ = ("key", "kind", "numel")

    def __init__(self, key: str, kind: _Kind, numel: int) -> None:
        self.key, self.kind, self.numel = key, kind, numel


class _Tensor(_Sealed):
    __slots__ = ("storage", "offset", "shape", "stride", "dtype")

    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple, dtype: str) -> None:
        self.storage, self.offset, self.shape, self.stride, self.dtype = storage, offset, shape, stride, dtype


class Call(_Sealed):
    """An allowlisted callable; a wrapper because plain functions accept attribute writes through BUILD."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., object]) -> None:
        self.fn = fn

    def __call__(self, *args: object) -> object:
        return self.fn(*args)


class _ODict(dict):
    """collections.OrderedDict; BUILD state (torch's `_metadata` attribute) is checked and dropped."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict):
            raise Refused("BUILD on an OrderedDict with non-dict state")


class Record:
    """An instance of a class a reader lets through (NEWOBJ then BUILD): only its attribute dict is kept. A
    TorchScript module or class (`__torch__.*`), to find and name its tensors: its code stays in the archive's
    `code/`, never run or read; or a torch.distributed.checkpoint metadata record."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: dict | tuple = {}

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, (dict, tuple)):   # a tuple: a class's own __getstate__ (DCP's TensorProperties)
            raise Refused("BUILD on a record with state that is neither a dict nor a tuple")
        self.state = state


def _is_index(x: object) -> bool:
    """A non-negative int small enough that sizes and offsets built from it stay exact and cheap."""
    return type(x) is int and 0 <= x < 1 << 62


def _tensor(storage: object, offset: object, size: object, stride: object, dtype: object = None) -> _Tensor:
    """Check the arguments every _rebuild_tensor* variant shares; only the bookkeeping is kept."""
    dims_ok = (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride) <= MAX_DIMS
               and all(map(_is_index, size + stride)))
    if not (isinstance(storage, _Storage) and _is_index(offset) and dims_ok
            and (dtype is None or isinstance(dtype, _Kind) and not dtype.untyped)):
        raise Refused("tensor rebuilt from unexpected arguments")
    return _Tensor(storage, offset, size, stride, (dtype or storage.kind).dtype)


def _v3(st: object, off: object, size: object, stride: object, requires_grad: object, hooks: object,
        dtype: object, metadata: object = None) -> _Tensor:
    # hooks: an OrderedDict, or None as torch 0.4 pickled it
    if type(requires_grad) is not bool or not isinstance(hooks, (dict, type(None))) \
            or not isinstance(metadata, (dict, type(None))):
        raise Refused("tensor rebuilt with unexpected requires_grad, hooks or metadata")
    return _tensor(st, off, size, stride, dtype)


def _v2(st: object, off: object, size: object, stride: object, requires_grad: object, hooks: object,
        metadata: object = None) -> _Tensor:
    return _v3(st, off, size, stride, requires_grad, hooks, None, metadata)


def _parameter(data: object, requires_grad: object, hooks: object, state: object = None) -> _Tensor:
    if not isinstance(data, _Tensor) or type(requires_grad) is not bool or not isinstance(hooks, (dict, type(None))):
        raise Refused("parameter rebuilt from unexpected arguments")
    return data


def _container(kind: type) -> Call:
    """OrderedDict, set, frozenset: protocol 2 (torch's default) spells them as a call on nothing or a list."""
    def make(*args: object) -> object:
        if len(args) > 1 or args and not isinstance(args[0], (list, tuple)):
            raise Refused(f"{kind.__name__} called with unexpected arguments")
        return kind(*args)
    return Call(make)


def _typed_list(kind: type) -> Call:
    """torch.jit._pickle.build_intlist and its siblings: how TorchScript pickles a typed list attribute; the list
    itself, once every item is of its type."""
    def ok(x: object) -> bool:
        return type(x) is bool if kind is bool else isinstance(x, kind) and type(x) is not bool

    def build(items: object) -> list:
        if not isinstance(items, list) or not all(map(ok, items)):
            raise Refused("a TorchScript typed list of unexpected items")
        return items
    return Call(build)


def _type_tag(value: object, tag: object) -> object:
    """torch.jit._pickle.restore_type_tag(value, "Dict[str, Tensor]"): the value; the tag is only a type name."""
    if not isinstance(tag, str) or not isinstance(value, (dict, list)):
        raise Refused("restore_type_tag called with unexpected arguments")
    return value


def _encode(text: object, encoding: object) -> bytes:
    """_codecs.encode(str, 'latin1'): how protocol 2 spells a bytes value."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise Refused("_codecs.encode called with unexpected arguments")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): _container(_ODict),
    **{(mod, kind.__name__): _container(kind) for mod in ("builtins", "__builtin__") for kind in (set, frozenset)},
    ("_codecs", "encode"): Call(_encode),
    ("torch.jit._pickle", "build_intlist"): _typed_list(int), ("torch.jit._pickle", "build_boollist"): _typed_list(bool),
    ("torch.jit._pickle", "build_doublelist"): _typed_list(float),
    ("torch.jit._pickle", "build_tensorlist"): _typed_list(_Tensor),
    ("torch.jit._pickle", "restore_type_tag"): Call(_type_tag),
    ("torch._utils", "_rebuild_tensor"): Call(_tensor), ("torch._utils", "_rebuild_tensor_v2"): Call(_v2),
    ("torch._utils", "_rebuild_tensor_v3"): Call(_v3), ("torch._utils", "_rebuild_parameter"): Call(_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): Call(_parameter),
    **{("torch", name): _Kind(dt, False) for name, dt in (_STORAGES | _DTYPES).items()},
    **{(mod, name): _Kind("U8", True) for mod in ("torch", "torch.storage")
       for name in ("UntypedStorage", "TypedStorage")},
}


class _Unpickler(pickle.Unpickler):
    """Resolves globals only from _ALLOWED and persistent ids only to _Storage placeholders (the zip layout's
    5-tuples, or with `legacy` the stream layout's 6-tuples, whose last item — a storage view — must be None)."""

    def __init__(self, data: bytes | io.BytesIO, legacy: bool = False, records: RecordTest | None = None,
                 extra: dict[tuple[str, str], object] | None = None) -> None:
        super().__init__(io.BytesIO(data) if isinstance(data, bytes) else data, fix_imports=False)
        self.storages: dict[str, _Storage] = {}
        self.legacy, self.records, self.allowed = legacy, records, {**_ALLOWED, **(extra or {})}

    def find_class(self, module: str, name: str) -> object:
        if self.records is not None and self.records(module, name):
            return Record                     # a class the reader lets through: a placeholder holding attributes
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise Refused(f"global {module}.{name} is not allowlisted") from None

    def persistent_load(self, pid: object) -> _Storage:
        if self.legacy and isinstance(pid, tuple) and len(pid) == 6 and pid[5] is None:
            pid = pid[:5]                  # (a legacy view of a storage, pid[5] set, stays refused)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Kind)
                and isinstance(pid[2], str) and isinstance(pid[3], str) and _is_index(pid[4])):
            raise Refused(f"unexpected persistent id of type {type(pid).__name__}")
        _, kind, key, _, numel = pid
        st = self.storages.setdefault(key, _Storage(key, kind, numel))
        if st.kind is not kind or st.numel != numel:
            raise Refused(f"storage {key!r} declared twice with different types or sizes")
        return st


def _prescan(data: bytes | io.BytesIO, records: bool = False) -> None:
    """Walk the opcodes (of one pickle: to its STOP) without running them, refusing what the C unpickler would turn
    into a hazard. `records`: objects are NEWOBJ of classes the unpickler resolves to `Record` (TorchScript's
    `__torch__` classes, DCP's metadata), so NEWOBJ is let through."""
    memo = 0
    banned = _BANNED_OPS - {"NEWOBJ"} if records else _BANNED_OPS
    for n, (op, arg, _) in enumerate(pickletools.genops(data)):
        if op.name in banned or n >= MAX_OPS:
            raise Refused(f"opcode {op.name} (number {n}) is not accepted")
        if op.name in ("INT", "LONG", "LONG1", "LONG4") and type(arg) is int and not -MAX_INT <= arg < MAX_INT:
            raise Refused("integer too large")
        memo += op.name == "MEMOIZE"
        if memo > MAX_MEMO or op.name.endswith("PUT") and arg >= MAX_MEMO:
            raise Refused("memo index beyond the cap")


def _walk(root: object) -> tuple[dict[str, str], dict[str, list[_Tensor]]]:
    """Storage key -> dotted key path of the first tensor (or bare storage) under it, and -> its tensors in order."""
    names: dict[str, str] = {}
    views: dict[str, list[_Tensor]] = {}
    seen: set[int] = set()  # shared containers are walked once, so memo-built DAGs cannot blow up the walk

    def walk(obj: object, path: tuple[str, ...]) -> None:
        if len(path) > MAX_DEPTH:
            raise Refused("containers nested too deeply")
        if isinstance(obj, _Tensor) and id(obj) not in seen:
            seen.add(id(obj))
            views.setdefault(obj.storage.key, []).append(obj)
        if isinstance(obj, Record) and id(obj) not in seen:
            seen.add(id(obj))
            state = obj.state.items() if isinstance(obj.state, dict) else enumerate(obj.state)
            for k, v in state:                   # a module's parameters and buffers, and its submodules
                walk(v, path + (str(k),))
        elif isinstance(obj, (_Tensor, _Storage)):
            if path:  # a top-level tensor has no path; it is named after its record below
                names.setdefault(obj.key if isinstance(obj, _Storage) else obj.storage.key, ".".join(path))
        elif isinstance(obj, (dict, list, tuple)) and id(obj) not in seen:
            seen.add(id(obj))
            for k, v in obj.items() if isinstance(obj, dict) else enumerate(obj):
                walk(v, path + (str(k),))

    walk(root, ())
    return names, views


def _is_script(module: str, name: str) -> bool:
    return module == "__torch__" or module.startswith("__torch__.")


def load_records(data: bytes, records: RecordTest, extra: dict[tuple[str, str], object]) -> object:
    """The object of a pickle of records (instances of the classes `records` accepts, each a `Record`) and the
    globals of torch.save's allowlist plus `extra` (each a `Call` or a constant), pre-scanned and never running
    code; Refused for anything else."""
    if len(data) > MAX_PICKLE:
        raise Refused(f"a {len(data)}-byte pickle")
    _prescan(data, True)
    return _Unpickler(data, records=records, extra=extra).load()


def _load(data: bytes, script: bool = False) -> tuple[dict[str, _Storage], dict[str, str], dict[str, list[_Tensor]]]:
    """Storages, names and tensor views of a data.pkl (`script`: of a TorchScript archive); raises Refused for
    anything outside the allowlist."""
    _prescan(data, script)
    unpickler = _Unpickler(data, records=_is_script if script else None)
    root = unpickler.load()
    return unpickler.storages, *_walk(root)


def _contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expect = 1
    for d, s in zip(reversed(shape), reversed(stride)):
        if d != 1 and s != expect:
            return False
        expect *= d
    return True


def _record(rel: str, buf: memoryview, info: zipfile.ZipInfo, st: _Storage, views: list[_Tensor],
            name: str) -> tuple[int, int, TensorInfo] | None:
    """The tensor span of one storage record, or None when it must stay opaque (compressed, sizes disagree)."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1 or info.compress_size != info.file_size:
        return None
    dtype = next((t.dtype for t in views), "U8") if st.kind.untyped else st.kind.dtype
    size, nbytes = itemsize(dtype), info.file_size
    if st.numel * (1 if st.kind.untyped else size) != nbytes or nbytes % size:
        return None
    numel = nbytes // size
    shapes = {t.shape for t in views if t.dtype == dtype and t.offset == 0 and math.prod(t.shape) == numel
              and (numel == 0 or _contiguous(t.shape, t.stride))}
    shape = shapes.pop() if len(shapes) == 1 else (numel,)
    at = info.header_offset  # the data starts after the local header, whose extra field torch uses for alignment
    local = bytes(buf[at:at + 30])
    if len(local) < 30 or local[:4] != MAGIC:
        raise MalformedCheckpoint(rel, f"member {info.filename!r} has no local header at offset {at}")
    start = at + 30 + sum(struct.unpack("<HH", local[26:30]))
    if start + nbytes > len(buf):
        raise MalformedCheckpoint(rel, f"member {info.filename!r} runs past the end of the file")
    return start, nbytes, TensorInfo(name, dtype, shape)


class _View(io.RawIOBase):
    """A seekable read-only file over the mapped buffer: io.BytesIO would copy a multi-GB checkpoint."""

    def __init__(self, buf: memoryview) -> None:
        super().__init__()
        self._buf, self._pos = buf, 0

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = offset + (0, self._pos, len(self._buf))[whence]
        if pos < 0:
            raise OSError("seek before the start of the file")  # what zipfile expects from files too short
        self._pos = pos
        return pos

    def read(self, n: int | None = -1) -> bytes:
        end = len(self._buf) if n is None or n < 0 else min(len(self._buf), self._pos + n)
        data = bytes(self._buf[self._pos:end])
        self._pos = max(self._pos, end)
        return data


def _readable(info: zipfile.ZipInfo) -> bool:
    """Not encrypted, and stored or deflated: bz2/lzma members are not worth their decompression bombs."""
    return not info.flag_bits & 1 and info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


LEGACY_MAGIC, LEGACY_PROTOCOL = 0x1950A86A20F9469CFC6C, 1001


def _pickle_at(buf: memoryview, pos: int, legacy: bool = False,
               limit: int = 1 << 20) -> tuple[object, _Unpickler, int]:
    """The pickle starting at `pos` (at most `limit` bytes: a bigger one is refused), pre-scanned, then loaded
    through the allowlist; with the unpickler and where the next one starts. Refused otherwise."""
    f = io.BytesIO(bytes(buf[pos:pos + limit]))
    _prescan(f)
    end = f.tell()
    f.seek(0)
    unpickler = _Unpickler(f, legacy)
    obj = unpickler.load()
    if f.tell() != end:
        raise Refused("the pickle's opcodes and its load disagree")
    return obj, unpickler, pos + end


def _legacy(rel: str, buf: memoryview) -> ScannedFile:
    """Scan a legacy torch.save stream (see the module docstring); opaque when anything is not as torch writes."""
    try:
        # the magic number is over 2**64, which _prescan refuses in general: its short pickle is read op by op
        ops = list(pickletools.genops(bytes(buf[:32])))
        if [(op.name, arg) for op, arg, _ in ops if op.name not in ("PROTO", "FRAME")] != [
                ("LONG1", LEGACY_MAGIC), ("STOP", None)]:
            return opaque(rel, buf)
        protocol, _, pos = _pickle_at(buf, ops[-1][2] + 1)
        info, _, pos = _pickle_at(buf, pos)
        if (protocol != LEGACY_PROTOCOL or not isinstance(info, dict)
                or info.get("little_endian") is not True):
            return opaque(rel, buf)  # a pickle, but not a little-endian torch.save: never labelled
        root, unpickler, pos = _pickle_at(buf, pos, legacy=True, limit=MAX_PICKLE)
        keys, _, pos = _pickle_at(buf, pos)
        names, views = _walk(root)
    except Exception:  # the unpickler only ever reaches our placeholders: whatever fails, the answer is "refuse"
        return opaque(rel, buf)
    storages = unpickler.storages
    if not (isinstance(keys, list) and sorted(storages) == sorted(keys) == keys):
        return opaque(rel, buf)
    spans = []
    for key in keys:
        st = storages[key]
        dtype = next((t.dtype for t in views.get(key, [])), "U8") if st.kind.untyped else st.kind.dtype
        size = itemsize(dtype)
        if pos + 8 > len(buf):
            return opaque(rel, buf)
        (numel,) = struct.unpack("<q", buf[pos:pos + 8])
        nbytes = numel * (1 if st.kind.untyped else size)
        if numel != st.numel or nbytes % size or pos + 8 + nbytes > len(buf):
            return opaque(rel, buf)      # sizes disagree with the pickle, or the file is cut short
        shapes = {t.shape for t in views.get(key, []) if t.dtype == dtype and t.offset == 0
                  and math.prod(t.shape) == nbytes // size and (nbytes == 0 or _contiguous(t.shape, t.stride))}
        shape = shapes.pop() if len(shapes) == 1 else (nbytes // size,)
        spans.append((pos + 8, nbytes, TensorInfo(names.get(key, f"storage/{key}"), dtype, shape)))
        pos += 8 + nbytes
    return spans_from_tensors(rel, buf, spans)


def scan(rel: str, buf: memoryview) -> ScannedFile:
    """Scan a torch.save file, reading its pickle without running it: the zip layout, or the legacy stream
    (pickle protocol 2+); what cannot be labelled is opaque."""
    if bytes(buf[:4]) != MAGIC:
        return _legacy(rel, buf) if bytes(buf[:1]) == b"\x80" else opaque(rel, buf)
    try:
        zf = zipfile.ZipFile(_View(buf))
        infos = {i.filename: i for i in zf.infolist()}
        pkls = [n for n in infos if _PKL.fullmatch(n)]
        if len(pkls) != 1:
            return opaque(rel, buf)  # a zip, but not one torch.save wrote
        prefix, pkl = pkls[0][:-len("/data.pkl")], infos[pkls[0]]
        order = infos.get(f"{prefix}/byteorder")
        if (pkl.file_size > MAX_PICKLE or not _readable(pkl) or order is not None
                and (order.file_size > 16 or not _readable(order) or zf.read(order) != b"little")):
            return opaque(rel, buf)  # too big, encrypted, exotic compression, or big-endian data we cannot label
        with zf.open(pkl) as f:
            data = f.read(MAX_PICKLE + 1)
    except ZIP_ERRORS as exc:
        raise MalformedCheckpoint(rel, f"torch zip archive does not parse: {exc}") from None
    try:
        # a TorchScript archive (torch.jit.save) has its code beside the pickle; the code is kept as it is
        script = any(n.startswith(f"{prefix}/code/") for n in infos) and f"{prefix}/constants.pkl" in infos
        storages, names, views = _load(data, script)
    except Exception:  # the unpickler only ever reaches our placeholders: whatever fails, the answer is "refuse"
        return opaque(rel, buf)
    spans = []
    for key, st in storages.items():
        info = infos.get(f"{prefix}/data/{key}")
        span = info and _record(rel, buf, info, st, views.get(key, []), names.get(key, f"data/{key}"))
        if span:
            spans.append(span)
    return spans_from_tensors(rel, buf, spans)
