"""ONNX models read by a bounded protobuf reader of our own: each tensor held inline is a tensor span, the graph
and everything else the rest of the file.

Only the messages on the way to tensors are decoded — ModelProto.graph (field 7); GraphProto.initializer (5) and
node (1); NodeProto.output (2), name (3) and attribute (5); AttributeProto.name (1), t (5), tensors (10), g (6)
and graphs (11), so Constant values and If/Loop/Scan bodies are reached (16 deep at most); in each TensorProto:
dims (1), data_type (2), name (8), raw_data (9), packed float_data (4) and double_data (10), whose wire bytes are
the little-endian array, external_data (13), data_location (14) — walking the wire format's tags, varints and
lengths with every length checked against what is left. A node's tensor without a name is named after the
Constant's output (or `node.attribute`), made unique with `#2` …; varint-coded lists (`int64_data` …) and types
without a byte layout here stay opaque. An initializer in an external data file is a tensor span of that file:
the file is read with the models beside it (`external_tensors`, `scan_external`). The `onnx` package is not
needed: parsing a model with it would build the whole graph in memory, and this reader never copies a tensor.
Anything that does not parse is opaque bytes.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

from ..errors import MalformedCheckpoint
from .base import DTYPES, ScannedFile, TensorInfo, opaque, spans_from_tensors

MAX_DIMS = 64
MAX_FIELDS = 1 << 20            # tags walked in one message before the file is taken as hostile
MAX_GRAPHS = 16                 # If/Loop/Scan bodies nested in each other, at most
MAX_MODELS = 64                 # .onnx files beside a data file read to find its initializers
MAX_MODEL = 2 << 30             # protobuf's own limit on a model's size
# TensorProto.DataType -> the DTYPES name with the same little-endian layout
_TYPES = {1: "F32", 2: "U8", 3: "I8", 4: "U16", 5: "I16", 6: "I32", 7: "I64", 9: "BOOL", 10: "F16", 11: "F64",
          12: "U32", 13: "U64", 16: "BF16", 17: "F8_E4M3", 19: "F8_E5M2"}


class _Bad(Exception):
    """The bytes are not a protobuf message of the expected shape."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Bad("varint runs past its message")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, pos: int, end: int):
    """(field number, wire type, value or (start, stop) of a length-delimited field) of one message."""
    for _ in range(MAX_FIELDS):
        if pos >= end:
            return
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if n > end - pos:
                raise _Bad("a length runs past its message")
            yield number, wire, (pos, pos + n)
            pos += n
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise _Bad("a fixed-width field runs past its message")
        else:
            raise _Bad(f"wire type {wire} (groups are not used by ONNX)")
    raise _Bad("too many fields")


def _text(buf: memoryview, value: tuple[int, int]) -> str:
    try:
        return bytes(buf[value[0]:value[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("a string is not UTF-8") from None


def _entry(buf: memoryview, start: int, end: int) -> tuple[str, str]:
    """A StringStringEntryProto: (key, value)."""
    key = value = ""
    for number, wire, v in _fields(buf, start, end):
        if wire == 2 and number in (1, 2):
            if number == 1:
                key = _text(buf, v)
            else:
                value = _text(buf, v)
    return key, value


def _tensor(buf: memoryview, start: int, end: int, external_out: list | None = None, default: str = ""
            ) -> tuple[int, int, TensorInfo] | None:
    """The span of one TensorProto's inline data — raw_data, or a packed float_data/double_data run, which is the
    same little-endian layout — or None when it has none we can label. Named `default` when it has no name (a
    Constant node's value). An initializer whose data lies in an external file is appended to `external_out` as
    (location, offset, length, TensorInfo)."""
    dims: list[int] = []
    dtype = name = raw = packed = None
    external = False
    entries: dict[str, str] = {}
    for number, wire, value in _fields(buf, start, end):
        if number == 1 and wire == 0:
            dims.append(value)
        elif number == 1 and wire == 2:                       # packed dims
            p, stop = value
            while p < stop:
                d, p = _varint(buf, p, stop)
                dims.append(d)
        elif number == 2 and wire == 0:
            dtype = _TYPES.get(value)
        elif number == 8 and wire == 2:
            name = _text(buf, value)
        elif number == 9 and wire == 2:
            raw = value
        elif number in (4, 10) and wire == 2:                 # float_data, double_data (packed)
            packed = (number, value)
        elif number == 13 and wire == 2:                      # external_data
            k, v = _entry(buf, *value)
            entries[k] = v
        elif number == 14 and wire == 0:
            external = value == 1
        if len(dims) > MAX_DIMS:
            raise _Bad("too many dims")
    name = name or default
    if dtype is None or not name or any(d >= 1 << 62 for d in dims):
        return None
    info = TensorInfo(name, dtype, tuple(dims))
    nbytes = math.prod(dims) * DTYPES[dtype].itemsize
    if external:
        where = _external(entries, nbytes)
        if where is not None and external_out is not None:
            external_out.append((*where, info))
        return None
    if raw is None and packed is not None and (packed[0], dtype) in ((4, "F32"), (10, "F64")):
        raw = packed[1]
    if raw is None or raw[1] - raw[0] != nbytes:
        return None                                          # raw bytes that do not match the shape: opaque
    return raw[0], nbytes, info


def _external(entries: dict[str, str], nbytes: int) -> tuple[str, int, int] | None:
    """(location, offset, length) of external data, when its entries are well formed and the length (if given)
    is the shape's."""
    location, offset, length = entries.get("location"), entries.get("offset", "0"), entries.get("length")
    if not location or not offset.isdigit() or (length is not None and (not length.isdigit()
                                                                         or int(length) != nbytes)):
        return None
    return location, int(offset), nbytes


def _graph(buf: memoryview, start: int, end: int, depth: int, out: list, external: list | None) -> None:
    """Collect a GraphProto's tensors into `out` as (offset, nbytes, TensorInfo, named by the model): its
    initializers (5), then the tensors in its nodes' attributes (1), subgraphs (If, Loop, Scan bodies) included."""
    for number, wire, value in _fields(buf, start, end):
        if number == 5 and wire == 2:                         # GraphProto.initializer
            t = _tensor(buf, *value, external)
            if t is not None:
                out.append((*t, True))
        elif number == 1 and wire == 2:                       # GraphProto.node
            _node(buf, *value, depth, out, external)


def _node(buf: memoryview, start: int, end: int, depth: int, out: list, external: list | None) -> None:
    outputs, name, attributes = [], "", []
    for number, wire, value in _fields(buf, start, end):
        if number == 2 and wire == 2:                         # NodeProto.output
            outputs.append(_text(buf, value))
        elif number == 3 and wire == 2:
            name = _text(buf, value)
        elif number == 5 and wire == 2:                       # NodeProto.attribute
            attributes.append(value)
    for span in attributes:
        attr, tensors, graphs = "", [], []
        for number, wire, value in _fields(buf, *span):
            if number == 1 and wire == 2:
                attr = _text(buf, value)
            elif number in (5, 10) and wire == 2:             # AttributeProto.t, .tensors
                tensors.append(value)
            elif number in (6, 11) and wire == 2:             # AttributeProto.g, .graphs
                graphs.append(value)
        # a Constant's value is named after its output, any other attribute's tensor after its node
        default = outputs[0] if attr == "value" and outputs else f"{name or (outputs or ['node'])[0]}.{attr}"
        for k, t in enumerate(tensors):
            found = _tensor(buf, *t, external, default if len(tensors) == 1 else f"{default}.{k}")
            if found is not None:
                out.append((*found, False))
        for g in graphs:
            if depth >= MAX_GRAPHS:
                raise _Bad("subgraphs nest too deep")
            _graph(buf, *g, depth + 1, out, external)


def _initializers(buf: memoryview, external: list | None = None) -> list[tuple[int, int, TensorInfo]]:
    """Every tensor of the model's graph with inline data, named uniquely: initializer names must be unique (else
    _Bad); a name a node's tensor takes from its output or node is made unique with `#2`, `#3` …"""
    found: list = []
    for number, wire, value in _fields(buf, 0, len(buf)):
        if number == 7 and wire == 2:                         # ModelProto.graph
            _graph(buf, *value, 0, found, external)
    named = [t[2].name for t in found if t[3]]
    if len(set(named)) != len(named):
        raise _Bad("an initializer name twice")
    taken, tensors = set(named), []
    for off, n, info, model_named in found:
        label, k = info.name, 1
        while not model_named and label in taken:
            k += 1
            label = f"{info.name}#{k}"
        taken.add(label)
        tensors.append((off, n, TensorInfo(label, info.dtype, info.shape) if label != info.name else info))
    return tensors


def external_tensors(model: memoryview) -> list[tuple[str, int, int, TensorInfo]]:
    """(location, offset, length, TensorInfo) of each initializer a model keeps in an external file (location
    relative to the model's directory); empty when the model does not parse."""
    out: list = []
    try:
        _initializers(model, out)
    except _Bad:
        return []
    return out


def scan_external(rel: str, buf: memoryview, tensors: list[tuple[int, int, TensorInfo]]) -> ScannedFile:
    """Scan an external data file with the (offset, length, TensorInfo) its models place in it; opaque when they
    do not fit it (outside the file, overlapping, a name twice)."""
    names = [t[2].name for t in tensors]
    if len(set(names)) != len(names) or any(off + n > len(buf) for off, n, _ in tensors):
        return opaque(rel, buf)
    try:
        return spans_from_tensors(rel, buf, tensors)
    except MalformedCheckpoint:
        return opaque(rel, buf)


def scan(rel: str, buf: memoryview) -> ScannedFile:
    """Scan an .onnx model: its inline initializers as tensors; opaque when it does not parse as ONNX."""
    try:
        return spans_from_tensors(rel, buf, _initializers(buf))
    except _Bad:
        return opaque(rel, buf)


def beside(path: str | os.PathLike) -> list[tuple[int, int, TensorInfo]] | None:
    """The initializers that the `.onnx` models in the directory of the file at `path` keep in that file, as
    (offset, length, TensorInfo); None when no model there names it."""
    target = Path(path).resolve()
    try:
        listing = os.stat(target.parent).st_mtime_ns
    except OSError:
        return None
    found = [t for model in _models(str(target.parent), listing)
             for t in _placed(model, *_signature(model)).get(str(target), ())]
    return found or None


@functools.lru_cache(maxsize=64)
def _models(directory: str, _mtime_ns: int) -> tuple[str, ...]:
    """The .onnx files of a directory (cached per directory and its mtime: one listing per commit, not per file)."""
    try:
        names = sorted(e.name for e in os.scandir(directory) if e.name.lower().endswith(".onnx") and e.is_file())
    except OSError:
        return ()
    return tuple(os.path.join(directory, n) for n in names[:MAX_MODELS])


def _signature(model: str) -> tuple[int, tuple[int, int, int]]:
    try:
        st = os.stat(model)
        return st.st_size, (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    except OSError:
        return -1, (0, 0, 0)


@functools.lru_cache(maxsize=64)
def _placed(model: str, size: int, _changed: tuple[int, int, int]) -> dict[str, list]:
    """External initializers of one model by the resolved path of the file holding them, as (offset, length,
    TensorInfo) (cached by the model's size, times and inode: each location is resolved once per model, not once
    per data file). A stale entry could only mislabel spans, never change the bytes stored: the spans cover the
    file whatever they are called."""
    from .base import map_file
    if not 0 < size <= MAX_MODEL:
        return {}
    try:
        placed = external_tensors(map_file(model))
    except OSError:
        return {}
    out: dict[str, list] = {}
    for loc, off, n, info in placed:
        out.setdefault(str((Path(model).parent / loc).resolve()), []).append((off, n, info))
    return out
