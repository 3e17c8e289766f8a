"""What every format reader returns: a file cut into spans, each a tensor's raw bytes or opaque bytes."""

from __future__ import annotations

import mmap
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import MalformedCheckpoint
from ..model.text import is_utf8, shown

# What the zipfile module raises on a damaged or hostile archive; the last: header fields naming zip features it
# does not read (e.g. a "version needed to extract" above 6.3).
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, ValueError, OSError, EOFError, struct.error,
              IndexError, NotImplementedError)

_NUMPY_NATIVE = {
    "BOOL": "?", "U8": "<u1", "I8": "<i1", "U16": "<u2", "I16": "<i2", "U32": "<u4", "I32": "<i4", "U64": "<u8",
    "I64": "<i8", "F16": "<f2", "F32": "<f4", "F64": "<f8", "C64": "<c8",
}
_ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu"}


class _DtypeTable(Mapping):
    """safetensors dtype name -> numpy dtype (little endian). ml_dtypes supplies bfloat16 and the float8 types; it
    is imported only when one of those is asked for (it costs ~90 ms of start-up)."""

    def __init__(self) -> None:
        self._loaded: dict[str, np.dtype] = {k: np.dtype(v) for k, v in _NUMPY_NATIVE.items()}

    def __getitem__(self, name: str) -> np.dtype:
        if name not in self._loaded and name in _ML_DTYPES:
            import ml_dtypes
            self._loaded[name] = np.dtype(getattr(ml_dtypes, _ML_DTYPES[name]))
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter([*_NUMPY_NATIVE, *_ML_DTYPES])

    def __len__(self) -> int:
        return len(_NUMPY_NATIVE) + len(_ML_DTYPES)

    def __contains__(self, name: object) -> bool:
        return name in _NUMPY_NATIVE or name in _ML_DTYPES


DTYPES = _DtypeTable()


def dtype_name(dt: np.dtype) -> str:
    """The safetensors name of a numpy dtype; big-endian input is named by its little-endian twin."""
    dt = np.dtype(dt).newbyteorder("<") if np.dtype(dt).byteorder == ">" else np.dtype(dt)
    for name in _NUMPY_NATIVE if dt.kind != "V" else _ML_DTYPES:
        if DTYPES[name] == dt:
            return name
    for name in _ML_DTYPES:  # ml_dtypes' types report other kinds on some numpy versions
        if DTYPES[name] == dt:
            return name
    raise ValueError(f"unsupported dtype {dt}")


# GGML's quantized types (llama.cpp's GGUF files): (elements per block, bytes per block). Their elements have no
# numpy type: a tensor of one is a run of whole blocks along its last axis, chunked on block boundaries (the block is
# its unit, as an element is for the types in DTYPES) and compressed as plain bytes; statistics only for the types
# `values` decodes.
BLOCKS = {
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34), "Q8_1": (32, 40),
    "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
    "Q8_K": (256, 292), "IQ2_XXS": (256, 66), "IQ2_XS": (256, 74), "IQ3_XXS": (256, 98), "IQ1_S": (256, 50),
    "IQ4_NL": (32, 18), "IQ3_S": (256, 110), "IQ2_S": (256, 82), "IQ4_XS": (256, 136), "IQ1_M": (256, 56),
    "TQ1_0": (256, 54), "TQ2_0": (256, 66), "MXFP4": (32, 17),
}


def is_blocked(dtype: str) -> bool:
    """Whether `dtype` names a block-quantized type (a key of BLOCKS), whose elements have no numpy type."""
    return dtype in BLOCKS


def itemsize(dtype: str) -> int:
    """Bytes per element of a dtype named as in DTYPES; bytes per block of a type in BLOCKS."""
    return BLOCKS[dtype][1] if dtype in BLOCKS else DTYPES[dtype].itemsize


def tensor_nbytes(dtype: str, shape: tuple[int, ...]) -> int | None:
    """Bytes of a tensor of `dtype` and `shape`; None when a block type's last axis is not whole blocks."""
    count = int(np.prod(shape, dtype=object))
    if dtype not in BLOCKS:
        return count * DTYPES[dtype].itemsize
    per, size = BLOCKS[dtype]
    if shape and shape[-1] % per:
        return None
    return count // per * size


def as_array(raw: np.ndarray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A tensor's bytes (a flat uint8 array) as its array: elements of its dtype in its shape, or, for a block type,
    uint8 rows of whole blocks (shape[:-1] + (bytes per row,)), the layout GGUF readers hand out."""
    if dtype in BLOCKS:
        return raw.reshape(*shape[:-1], -1) if shape else raw
    return raw.view(DTYPES[dtype]).reshape(shape)


def _q8_0(blocks: np.ndarray) -> np.ndarray:
    """Q8_0 blocks (34 bytes: a float16 scale d, then 32 int8 q) as float32 values d·q, in order."""
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)
    return (d * blocks[:, 2:].view(np.int8).astype(np.float32)).reshape(-1)


def _q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (18 bytes: a float16 scale d, then 16 bytes of 4-bit q, low nibbles the first 16 values) as
    float32 values d·(q − 8), in order."""
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)
    q = blocks[:, 2:]
    x = np.concatenate([q & 0x0F, q >> 4], axis=1).astype(np.float32) - 8.0
    return (d * x).reshape(-1)


# the block types whose values ckstore decodes for statistics and diffs (the simple ones: a scale per block); the
# others' layouts (K-quants, IQ, TQ) are llama.cpp's to define, and get no statistics
_DEQUANT = {"Q8_0": _q8_0, "Q4_0": _q4_0}


def element_dtype(dtype: str) -> np.dtype | None:
    """The numpy type of the values a tensor of `dtype` gets statistics over (float32 for the block types ckstore
    decodes); None for complex types and the other block types."""
    if dtype in BLOCKS:
        return np.dtype(np.float32) if dtype in _DEQUANT else None
    return None if DTYPES[dtype].kind == "c" else DTYPES[dtype]


def values(dtype: str, data: object) -> np.ndarray:
    """The values statistics are taken over, from a tensor's (or a whole-block chunk's) bytes or from the array
    `Repo.load` gives: the elements as they are, or a block type's decoded to float32. Only for dtypes whose
    element_dtype is not None."""
    if dtype in _DEQUANT:
        raw = data.reshape(-1) if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
        return _DEQUANT[dtype](raw.view(np.uint8).reshape(-1, BLOCKS[dtype][1]))
    if isinstance(data, np.ndarray):
        return data
    return np.frombuffer(data, dtype=DTYPES[dtype])


def element_count(dtype: str, nbytes: int) -> int:
    """How many elements `nbytes` of a tensor of `dtype` hold (whole blocks for a block type)."""
    if dtype in BLOCKS:
        per, size = BLOCKS[dtype]
        return nbytes // size * per
    return nbytes // DTYPES[dtype].itemsize


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """A tensor's name, dtype (a key of DTYPES) and shape, as its checkpoint file declares them."""

    name: str
    dtype: str  # a key of DTYPES or BLOCKS
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Span:
    """A run of a file's bytes: `data` is a zero-copy view; `tensor` says which tensor it is, if any."""

    offset: int
    data: memoryview
    tensor: TensorInfo | None = None

    @property
    def nbytes(self) -> int:
        """Length of the span in bytes."""
        return len(self.data)


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """A file cut into spans that cover it exactly, in order."""

    path: str  # relative, "/"-separated
    size: int
    spans: tuple[Span, ...]

    def tensors(self) -> list[Span]:
        """The spans that hold tensors, in file order."""
        return [s for s in self.spans if s.tensor is not None]


def map_file(path: str | os.PathLike) -> memoryview:
    """A read-only zero-copy view of a file (empty files have nothing to map)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


def mapping_of(f: "ScannedFile") -> mmap.mmap | None:
    """The file mapping a scanned file's spans are views of, if they are (in-memory state dicts are not)."""
    for span in f.spans:
        if isinstance(span.data.obj, mmap.mmap):
            return span.data.obj
    return None


def drop_range(mm: mmap.mmap, lo: int, hi: int) -> int:
    """Take bytes [lo, hi) of a mapped file out of this process's resident set, whole pages inside the range only;
    returns where the dropped pages end (the next range starts there). They stay in the page cache: touching them
    again costs a minor fault, not a read."""
    lo = -(-lo // mmap.PAGESIZE) * mmap.PAGESIZE
    hi = len(mm) if hi >= len(mm) else hi - hi % mmap.PAGESIZE
    if hi <= lo or mm.closed:
        return max(lo, min(hi, lo))
    try:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    except (OSError, ValueError, AttributeError):
        pass  # only a memory hint
    return hi


def check_file_name(rel: str) -> str:
    """`rel` itself when it can be stored (a manifest path is UTF-8); MalformedCheckpoint naming it otherwise."""
    if not isinstance(rel, str) or not is_utf8(rel):
        raise MalformedCheckpoint(ascii(rel), "the file name is not valid UTF-8 (rename the file to commit it)")
    return rel


def spans_from_tensors(rel: str, buf: memoryview, tensors: list[tuple[int, int, TensorInfo]]) -> ScannedFile:
    """Cover `buf` with spans: the given tensor byte ranges (offset, nbytes, info) and opaque gaps between them.

    Tensor ranges must be in bounds and must not overlap; zero-length tensors get an empty span in place. Every
    tensor name must be valid UTF-8 (a JSON or pickle string can hold a lone surrogate no manifest can store).
    """
    spans: list[Span] = []
    pos = 0
    for _, _, info in tensors:
        if not isinstance(info.name, str) or not is_utf8(info.name):
            raise MalformedCheckpoint(shown(rel), f"tensor name {ascii(info.name)} is not valid UTF-8")
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
    """A file scanned as one opaque span of all its bytes (no spans if it is empty)."""
    return ScannedFile(rel, len(buf), (Span(0, buf),) if len(buf) else ())


def check_shape(rel: str, name: str, dtype: str, shape: list, nbytes: int) -> tuple[int, ...]:
    """The shape as a tuple once dtype and shape are valid and need exactly `nbytes`; else MalformedCheckpoint."""
    if not isinstance(dtype, str) or dtype not in DTYPES:  # a JSON list/dict dtype is unhashable
        raise MalformedCheckpoint(rel, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise MalformedCheckpoint(rel, f"tensor {name!r} has an invalid shape {shape!r}")
    want = int(np.prod(shape, dtype=object)) * DTYPES[dtype].itemsize
    if want != nbytes:
        raise MalformedCheckpoint(rel, f"tensor {name!r}: shape {shape} × {dtype} needs {want} bytes, "
                                       f"offsets give {nbytes}")
    return tuple(shape)
