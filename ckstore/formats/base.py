"""What every format reader returns: a file cut into spans, each a tensor's raw bytes or opaque bytes."""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from ..errors import MalformedCheckpoint

# safetensors dtype name -> numpy dtype (little endian). ml_dtypes supplies bfloat16 and the float8 types.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype("<u1"), "I8": np.dtype("<i1"), "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"), "U32": np.dtype("<u4"), "I32": np.dtype("<i4"), "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"), "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "F8_E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),
    "C64": np.dtype("<c8"),
}
_BY_NUMPY = {v: k for k, v in DTYPES.items()}


def dtype_name(dt: np.dtype) -> str:
    """The safetensors name of a numpy dtype; big-endian input is named by its little-endian twin."""
    dt = np.dtype(dt).newbyteorder("<") if np.dtype(dt).byteorder == ">" else np.dtype(dt)
    try:
        return _BY_NUMPY[dt]
    except KeyError:
        raise ValueError(f"unsupported dtype {dt}") from None


def itemsize(dtype: str) -> int:
    return DTYPES[dtype].itemsize


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    dtype: str  # a key of DTYPES
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Span:
    """A run of a file's bytes: `data` is a zero-copy view; `tensor` says which tensor it is, if any."""

    offset: int
    data: memoryview
    tensor: TensorInfo | None = None

    @property
    def nbytes(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """A file cut into spans that cover it exactly, in order."""

    path: str  # relative, "/"-separated
    size: int
    spans: tuple[Span, ...]

    def tensors(self) -> list[Span]:
        return [s for s in self.spans if s.tensor is not None]


def map_file(path: str | os.PathLike) -> memoryview:
    """A read-only zero-copy view of a file (empty files have nothing to map)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


def spans_from_tensors(rel: str, buf: memoryview, tensors: list[tuple[int, int, TensorInfo]]) -> ScannedFile:
    """Cover `buf` with spans: the given tensor byte ranges (offset, nbytes, info) and opaque gaps between them.

    Tensor ranges must be in bounds and must not overlap; zero-length tensors get an empty span in place.
    """
    spans: list[Span] = []
    pos = 0
    for off, n, info in sorted(tensors, key=lambda t: (t[0], t[1])):
        if off < pos or off + n > len(buf):
            raise MalformedCheckpoint(rel, f"tensor {info.name!r} bytes [{off}, {off + n}) overlap another or "
                                           f"lie outside the file ({len(buf)} bytes)")
        if off > pos:
            spans.append(Span(pos, buf[pos:off]))
        spans.append(Span(off, buf[off:off + n], info))
        pos = off + n
    if pos < len(buf):
        spans.append(Span(pos, buf[pos:]))
    return ScannedFile(rel, len(buf), tuple(spans))


def opaque(rel: str, buf: memoryview) -> ScannedFile:
    return ScannedFile(rel, len(buf), (Span(0, buf),) if len(buf) else ())


def check_shape(rel: str, name: str, dtype: str, shape: list, nbytes: int) -> tuple[int, ...]:
    if not isinstance(dtype, str) or dtype not in DTYPES:  # a JSON list/dict dtype is unhashable
        raise MalformedCheckpoint(rel, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise MalformedCheckpoint(rel, f"tensor {name!r} has an invalid shape {shape!r}")
    want = int(np.prod(shape, dtype=object)) * DTYPES[dtype].itemsize
    if want != nbytes:
        raise MalformedCheckpoint(rel, f"tensor {name!r}: shape {shape} × {dtype} needs {want} bytes, "
                                       f"offsets give {nbytes}")
    return tuple(shape)
