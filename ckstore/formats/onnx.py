"""ONNX models read by a bounded protobuf reader of our own: each initializer held inline (`raw_data`) is a tensor
span, the graph and everything else the rest of the file.

Only the three messages on the way to the initializers are decoded — ModelProto.graph (field 7),
GraphProto.initializer (5), and in each TensorProto: dims (1), data_type (2), name (8), raw_data (9),
data_location (14) — walking the wire format's tags, varints and lengths with every length checked against what
is left. Initializers stored as typed lists (`float_data` …), in external files, or of a type without a byte
layout here stay in the opaque part. The `onnx` package is not needed: parsing a model with it would build the
whole graph in memory, and this reader never copies a tensor. Anything that does not parse is opaque bytes.
"""

from __future__ import annotations

import math

from .base import DTYPES, ScannedFile, TensorInfo, opaque, spans_from_tensors

MAX_DIMS = 64
MAX_FIELDS = 1 << 20            # tags walked in one message before the file is taken as hostile
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


def _tensor(buf: memoryview, start: int, end: int) -> tuple[int, int, TensorInfo] | None:
    """The span of one TensorProto's inline raw_data, or None when it has no byte layout we can label."""
    dims: list[int] = []
    dtype = name = raw = None
    external = False
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
            try:
                name = bytes(buf[value[0]:value[1]]).decode("utf-8")
            except UnicodeDecodeError:
                raise _Bad("a tensor name is not UTF-8") from None
        elif number == 9 and wire == 2:
            raw = value
        elif number == 14 and wire == 0:
            external = value == 1
        if len(dims) > MAX_DIMS:
            raise _Bad("too many dims")
    if raw is None or external or dtype is None or not name:
        return None
    nbytes = raw[1] - raw[0]
    if any(d >= 1 << 62 for d in dims) or math.prod(dims) * DTYPES[dtype].itemsize != nbytes:
        return None                                          # raw bytes that do not match the shape: opaque
    return raw[0], nbytes, TensorInfo(name, dtype, tuple(dims))


def scan(rel: str, buf: memoryview) -> ScannedFile:
    """Scan an .onnx model: its inline initializers as tensors; opaque when it does not parse as ONNX."""
    try:
        tensors = []
        for number, wire, value in _fields(buf, 0, len(buf)):
            if number == 7 and wire == 2:                     # ModelProto.graph
                for n2, w2, v2 in _fields(buf, *value):
                    if n2 == 5 and w2 == 2:                   # GraphProto.initializer
                        t = _tensor(buf, *v2)
                        if t is not None:
                            tensors.append(t)
        names = [t[2].name for t in tensors]
        if len(set(names)) != len(names):
            return opaque(rel, buf)                           # initializer names are unique in a valid model
        return spans_from_tensors(rel, buf, tensors)
    except _Bad:
        return opaque(rel, buf)
